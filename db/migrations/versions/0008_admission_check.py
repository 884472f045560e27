"""admission check: per phone, whether the image was like the active model's reference, and why not; images looked up by hash per line (a frozen camera)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 18:30:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('routings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('admitted', sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column('admission_check', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('admission_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('novelty', sa.Float(), nullable=True))
    with op.batch_alter_table('inspections', schema=None) as batch_op:
        batch_op.create_index('ix_inspections_line_image', ['line_id', 'image_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('inspections', schema=None) as batch_op:
        batch_op.drop_index('ix_inspections_line_image')
    with op.batch_alter_table('routings', schema=None) as batch_op:
        batch_op.drop_column('novelty')
        batch_op.drop_column('admission_reason')
        batch_op.drop_column('admission_check')
        batch_op.drop_column('admitted')

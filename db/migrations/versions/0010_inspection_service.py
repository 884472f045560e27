"""inspection service: API keys per station and line, the answers given to the gate, per-line budget and fail-safe

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-22 09:30:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_sha256', sa.String(length=64), nullable=False),
    sa.Column('line_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('revoked_at', sa.DateTime(), nullable=True),
    sa.Column('revoked_by', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['line_id'], ['lines.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('prefix'),
    sa.UniqueConstraint('line_id', 'name', name='uq_api_key_name_per_line')
    )
    # Serials repeat across simulator runs and ingests, so inspections stay non-unique; phones
    # posted to the service are unique per line here (a station's retry is the same phone).
    op.create_table('gate_answers',
    sa.Column('inspection_id', sa.Integer(), nullable=False),
    sa.Column('line_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=64), nullable=False),
    sa.Column('station', sa.String(length=64), nullable=True),
    sa.Column('api_key_id', sa.Integer(), nullable=True),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=True),
    sa.Column('decided_by', sa.String(length=8), nullable=True),
    sa.Column('level', sa.String(length=16), nullable=True),
    sa.Column('rule', sa.String(length=64), nullable=True),
    sa.Column('model_version_id', sa.Integer(), nullable=True),
    sa.Column('failsafe', sa.String(length=32), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('answered_at', sa.DateTime(), nullable=True),
    sa.CheckConstraint("action IS NULL OR action IN ('pass', 'reject', 'to_person')", name='ck_gate_action_valid'),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], ),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], ),
    sa.ForeignKeyConstraint(['line_id'], ['lines.id'], ),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ),
    sa.PrimaryKeyConstraint('inspection_id'),
    sa.UniqueConstraint('line_id', 'serial', name='uq_gate_answer_line_serial')
    )
    with op.batch_alter_table('line_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('answer_budget_ms', sa.Integer(), server_default='300', nullable=False))
        batch_op.add_column(sa.Column('failsafe_action', sa.String(length=16), server_default='to_person', nullable=False))
        batch_op.create_check_constraint('ck_answer_budget', 'answer_budget_ms > 0')
        batch_op.create_check_constraint('ck_failsafe_action', "failsafe_action IN ('to_person', 'reject')")
    # The hold station follows a line's final decisions in order: (line, decided_at, inspection).
    with op.batch_alter_table('final_decisions', schema=None) as batch_op:
        batch_op.create_index('ix_final_decisions_line_decided', ['line_id', 'decided_at', 'inspection_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('final_decisions', schema=None) as batch_op:
        batch_op.drop_index('ix_final_decisions_line_decided')
    with op.batch_alter_table('line_settings', schema=None) as batch_op:
        batch_op.drop_constraint('ck_failsafe_action', type_='check')
        batch_op.drop_constraint('ck_answer_budget', type_='check')
        batch_op.drop_column('failsafe_action')
        batch_op.drop_column('answer_budget_ms')
    op.drop_table('gate_answers')
    op.drop_table('api_keys')

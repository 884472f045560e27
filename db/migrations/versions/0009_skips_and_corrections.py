"""review skips and decision corrections; final and human decisions become insert-only

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 09:00:00

A skipped phone goes to the back of the skipper's queue (``review_skips``). A verdict is corrected by
a new row linked to it (``decision_corrections``), never by an edit: triggers refuse UPDATE and
DELETE on ``final_decisions``, ``human_decisions`` and ``decision_corrections``, as on the audit log.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INSERT_ONLY = ("final_decisions", "human_decisions", "decision_corrections")


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('review_skips',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('skipped_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['review_tasks.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('review_skips', schema=None) as batch_op:
        batch_op.create_index('ix_review_skips_reviewer_task', ['reviewer', 'task_id', 'skipped_at'], unique=False)

    op.create_table('decision_corrections',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('human_decision_id', sa.Integer(), nullable=False),
    sa.Column('inspection_id', sa.Integer(), nullable=False),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('verdict', sa.String(length=8), nullable=False),
    sa.Column('previous_verdict', sa.String(length=8), nullable=False),
    sa.Column('corrected_by', sa.String(length=64), nullable=False),
    sa.Column('is_undo', sa.Boolean(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('corrected_at', sa.DateTime(), nullable=False),
    sa.CheckConstraint("verdict IN ('pass', 'reject')", name='ck_verdict_valid'),
    sa.ForeignKeyConstraint(['human_decision_id'], ['human_decisions.id'], ),
    sa.ForeignKeyConstraint(['inspection_id'], ['inspections.id'], ),
    sa.ForeignKeyConstraint(['supersedes_id'], ['decision_corrections.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('decision_corrections', schema=None) as batch_op:
        batch_op.create_index('ix_decision_corrections_corrected_at', ['corrected_at'], unique=False)
        batch_op.create_index('ix_decision_corrections_decision', ['human_decision_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_decision_corrections_inspection_id'), ['inspection_id'], unique=False)

    _install_insert_only()


def downgrade() -> None:
    """Downgrade schema."""
    _drop_insert_only()
    with op.batch_alter_table('decision_corrections', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decision_corrections_inspection_id'))
        batch_op.drop_index('ix_decision_corrections_decision')
        batch_op.drop_index('ix_decision_corrections_corrected_at')
    op.drop_table('decision_corrections')
    with op.batch_alter_table('review_skips', schema=None) as batch_op:
        batch_op.drop_index('ix_review_skips_reviewer_task')
    op.drop_table('review_skips')


def _install_insert_only() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in INSERT_ONLY:
            for verb in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is insert-only: correct a verdict with a new row'); END"
                )
    elif dialect == "postgresql":
        op.execute(
            "CREATE FUNCTION insert_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION '% is insert-only: correct a verdict with a new row', TG_TABLE_NAME; END $$ LANGUAGE plpgsql"
        )
        for table in INSERT_ONLY:
            op.execute(f"CREATE TRIGGER {table}_insert_only BEFORE UPDATE OR DELETE ON {table} FOR EACH ROW EXECUTE FUNCTION insert_only()")


def _drop_insert_only() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for table in INSERT_ONLY:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    elif dialect == "postgresql":
        for table in INSERT_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_insert_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS insert_only()")

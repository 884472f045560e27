"""indexes for page queries: final decisions carry their line; processed_at and review indexes

Revision ID: 0003
Revises: 0002

The Live line page counts verdicts per line over every phone ever decided: with a million
phones, joining final_decisions to inspections for that took most of a second. The line is now
stored on the final decision itself (backfilled here) and covered by an index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("final_decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("line_id", sa.Integer(), nullable=True))
    op.execute("UPDATE final_decisions SET line_id = (SELECT line_id FROM inspections WHERE inspections.id = final_decisions.inspection_id)")
    with op.batch_alter_table("final_decisions", schema=None) as batch_op:
        batch_op.alter_column("line_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key("fk_final_decisions_line_id_lines", "lines", ["line_id"], ["id"])
        batch_op.create_index("ix_final_decisions_line_verdict", ["line_id", "verdict", "decided_by"], unique=False)
    with op.batch_alter_table("inspections", schema=None) as batch_op:
        batch_op.create_index("ix_inspections_line_processed", ["line_id", "processed_at"], unique=False)
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_review_tasks_status_created", ["status", "created_at"], unique=False)
    with op.batch_alter_table("human_decisions", schema=None) as batch_op:
        batch_op.create_index("ix_human_decisions_decided_at", ["decided_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("human_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_human_decisions_decided_at")
    with op.batch_alter_table("review_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_review_tasks_status_created")
    with op.batch_alter_table("inspections", schema=None) as batch_op:
        batch_op.drop_index("ix_inspections_line_processed")
    with op.batch_alter_table("final_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_final_decisions_line_verdict")
        batch_op.drop_constraint("fk_final_decisions_line_id_lines", type_="foreignkey")
        batch_op.drop_column("line_id")

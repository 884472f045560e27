"""a plant on PostgreSQL: one open drift alarm per line and metric, TRUNCATE refused, one error class, 64-bit ids

- A unique partial index makes a second open alarm on the same line and metric impossible on
  both backends (two overlapping checks cannot raise it twice). Duplicates left by older
  versions are closed first (acknowledged and cleared by the system, the newest one kept).
- PostgreSQL: the append-only and insert-only triggers raise SQLSTATE 23000
  (integrity_constraint_violation), so the driver raises IntegrityError as SQLite's RAISE(ABORT)
  does; and a statement trigger refuses TRUNCATE on those tables as well.
- PostgreSQL: every integer id (and every column holding one) becomes BIGINT, with its sequence,
  so ``inspections`` at 20 lines x 2 phones/s does not run out in under two years.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 19:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

INSERT_ONLY = ("final_decisions", "human_decisions", "decision_corrections")
OPEN_ALARM = "acknowledged_at IS NULL OR cleared_at IS NULL"
#: Integer columns that hold ids but are not named ``id`` or ``*_id``: none today; kept for clarity.
EXTRA_ID_COLUMNS: tuple[tuple[str, str], ...] = ()


def upgrade() -> None:
    """Upgrade schema."""
    dialect = op.get_bind().dialect.name
    _close_duplicate_open_alarms()
    with op.batch_alter_table('drift_alarms', schema=None) as batch_op:
        batch_op.create_index(
            'uq_drift_alarms_one_open', ['line_id', 'metric'], unique=True,
            sqlite_where=sa.text(OPEN_ALARM), postgresql_where=sa.text(OPEN_ALARM),
        )
    if dialect == "postgresql":
        _postgres_triggers(errcode=True)
        for table in ("audit_log", *INSERT_ONLY):
            function = "audit_log_append_only" if table == "audit_log" else "insert_only"
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT EXECUTE FUNCTION {function}()")
        _id_columns_to("bigint")


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        _id_columns_to("integer")
        for table in ("audit_log", *INSERT_ONLY):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        _postgres_triggers(errcode=False)
    with op.batch_alter_table('drift_alarms', schema=None) as batch_op:
        batch_op.drop_index('uq_drift_alarms_one_open')


def _close_duplicate_open_alarms() -> None:
    op.execute(
        "UPDATE drift_alarms SET "
        "acknowledged_at = COALESCE(acknowledged_at, CURRENT_TIMESTAMP), acknowledged_by = COALESCE(acknowledged_by, 'system'), "
        "acknowledgement_note = COALESCE(acknowledgement_note, 'closed by migration 0011: a duplicate of a newer open alarm'), "
        "cleared_at = COALESCE(cleared_at, CURRENT_TIMESTAMP) "
        f"WHERE ({OPEN_ALARM}) AND EXISTS (SELECT 1 FROM drift_alarms newer WHERE newer.line_id = drift_alarms.line_id "
        "AND newer.metric = drift_alarms.metric AND newer.id > drift_alarms.id "
        "AND (newer.acknowledged_at IS NULL OR newer.cleared_at IS NULL))"
    )


def _postgres_triggers(*, errcode: bool) -> None:
    using = " USING ERRCODE = 'integrity_constraint_violation'" if errcode else ""
    op.execute(
        "CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION 'audit_log is append-only'{using}; END $$ LANGUAGE plpgsql"
    )
    op.execute(
        "CREATE OR REPLACE FUNCTION insert_only() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION '% is insert-only: correct a verdict with a new row', TG_TABLE_NAME{using}; END $$ LANGUAGE plpgsql"
    )


def _id_columns_to(kind: str) -> None:
    """ALTER every integer/bigint id column of the public schema (and its sequence) to ``kind``."""
    bind = op.get_bind()
    source = "integer" if kind == "bigint" else "bigint"
    rows = bind.execute(
        sa.text(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND data_type = :source "
            "AND (column_name = 'id' OR column_name LIKE '%\\_id' ESCAPE '\\') AND table_name <> 'alembic_version' "
            "ORDER BY table_name, column_name"
        ),
        {"source": source},
    ).all()
    for table, column in [*rows, *EXTRA_ID_COLUMNS]:
        op.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE {kind}')
        sequence = bind.execute(sa.text("SELECT pg_get_serial_sequence(:table, :column)"), {"table": table, "column": column}).scalar()
        if sequence:
            op.execute(f"ALTER SEQUENCE {sequence} AS {kind}")

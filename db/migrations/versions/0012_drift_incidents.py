"""drift incidents: the alarms of one cause grouped, acknowledged once; alarms keep their reference and current value

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-23 19:10:00

Alarms still open when upgrading are grouped per line and scope (drift, system) into one incident each.
"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

SYSTEM_KINDS = ("software",)
#: Ids are 64-bit on PostgreSQL from 0011 on; SQLite keeps INTEGER (its rowid alias).
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('drift_incidents',
    sa.Column('id', ID, nullable=False),
    sa.Column('line_id', ID, nullable=False),
    sa.Column('scope', sa.String(length=8), nullable=False),
    sa.Column('severity', sa.String(length=8), nullable=False),
    sa.Column('headline_alarm_id', ID, nullable=True),
    sa.Column('opened_at', sa.DateTime(), nullable=False),
    sa.Column('closed_at', sa.DateTime(), nullable=True),
    sa.Column('acknowledged_at', sa.DateTime(), nullable=True),
    sa.Column('acknowledged_by', sa.String(length=64), nullable=True),
    sa.Column('acknowledgement_note', sa.Text(), nullable=True),
    sa.CheckConstraint("severity IN ('warning', 'severe')", name='ck_incident_severity_valid'),
    sa.CheckConstraint("scope IN ('drift', 'system')", name='ck_incident_scope_valid'),
    sa.ForeignKeyConstraint(['line_id'], ['lines.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('drift_incidents', schema=None) as batch_op:
        batch_op.create_index('ix_drift_incidents_line_open', ['line_id', 'closed_at'], unique=False)
    with op.batch_alter_table('drift_alarms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('incident_id', ID, nullable=True))
        batch_op.add_column(sa.Column('reference_value', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('current_value', sa.Float(), nullable=True))
        batch_op.create_index(batch_op.f('ix_drift_alarms_incident_id'), ['incident_id'], unique=False)
        batch_op.create_foreign_key('fk_drift_alarms_incident_id', 'drift_incidents', ['incident_id'], ['id'])
    _group_open_alarms()


def _group_open_alarms() -> None:
    """One incident per line and scope for the alarms open now (not both acknowledged and cleared)."""
    bind = op.get_bind()
    alarms = sa.table(
        'drift_alarms',
        sa.column('id', sa.Integer), sa.column('line_id', sa.Integer), sa.column('kind', sa.String), sa.column('severity', sa.String),
        sa.column('raised_at', sa.DateTime), sa.column('acknowledged_at', sa.DateTime), sa.column('acknowledged_by', sa.String),
        sa.column('acknowledgement_note', sa.Text), sa.column('cleared_at', sa.DateTime), sa.column('incident_id', sa.Integer),
    )
    incidents = sa.table(
        'drift_incidents',
        sa.column('id', sa.Integer), sa.column('line_id', sa.Integer), sa.column('scope', sa.String), sa.column('severity', sa.String),
        sa.column('headline_alarm_id', sa.Integer), sa.column('opened_at', sa.DateTime), sa.column('acknowledged_at', sa.DateTime),
        sa.column('acknowledged_by', sa.String), sa.column('acknowledgement_note', sa.Text),
    )
    rows = bind.execute(
        sa.select(alarms).where(sa.or_(alarms.c.acknowledged_at.is_(None), alarms.c.cleared_at.is_(None))).order_by(alarms.c.id)
    ).all()
    groups: dict[tuple[int, str], list] = {}
    for row in rows:
        groups.setdefault((row.line_id, 'system' if row.kind in SYSTEM_KINDS else 'drift'), []).append(row)
    for (line_id, scope), members in groups.items():
        severe = any(m.severity == 'severe' for m in members)
        acknowledged = [m for m in members if m.acknowledged_at is not None]
        all_acknowledged = len(acknowledged) == len(members)
        incident_id = bind.execute(
            incidents.insert().returning(incidents.c.id).values(
                line_id=line_id,
                scope=scope,
                severity='severe' if severe else 'warning',
                headline_alarm_id=members[0].id,
                opened_at=min(m.raised_at for m in members),
                acknowledged_at=max(m.acknowledged_at for m in acknowledged) if all_acknowledged else None,
                acknowledged_by=acknowledged[-1].acknowledged_by if all_acknowledged else None,
                acknowledgement_note=acknowledged[-1].acknowledgement_note if all_acknowledged else None,
            )
        ).scalar_one()
        bind.execute(alarms.update().where(alarms.c.id.in_([m.id for m in members])).values(incident_id=incident_id))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('drift_alarms', schema=None) as batch_op:
        batch_op.drop_constraint('fk_drift_alarms_incident_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_drift_alarms_incident_id'))
        batch_op.drop_column('current_value')
        batch_op.drop_column('reference_value')
        batch_op.drop_column('incident_id')
    with op.batch_alter_table('drift_incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_drift_incidents_line_open')
    op.drop_table('drift_incidents')

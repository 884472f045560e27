"""sign-in sessions: one row per signed-in browser (token hash, expiry, idle, who ended it)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 19:10:00.000000

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0012'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

#: Ids are 64-bit on PostgreSQL from 0011 on; SQLite keeps INTEGER (its rowid alias).
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('sign_in_sessions',
    sa.Column('id', ID, nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('user_id', ID, nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.Column('ended_at', sa.DateTime(), nullable=True),
    sa.Column('ended_by', sa.String(length=64), nullable=True),
    sa.Column('end_reason', sa.String(length=32), nullable=True),
    sa.Column('client', sa.String(length=200), nullable=True),
    sa.Column('address', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_index('ix_sign_in_sessions_open', 'sign_in_sessions', ['ended_at', 'expires_at'], unique=False)
    op.create_index(op.f('ix_sign_in_sessions_user_id'), 'sign_in_sessions', ['user_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index(op.f('ix_sign_in_sessions_user_id'), table_name='sign_in_sessions')
    op.drop_index('ix_sign_in_sessions_open', table_name='sign_in_sessions')
    op.drop_table('sign_in_sessions')

"""model versions' paths relative to the models folder (each machine resolves them under its own)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-23 22:40:00.000000

A path stored absolute names the registering machine's disk; a worker on another machine, whose
models folder (``SHADOWLINE_MODELS_DIR``) is a shared mount elsewhere or a copy, cannot use it.
The upgrade rewrites the paths that lie under the migrating machine's models folder as relative
ones (``scratch-v2``); others stay absolute (found by name, see db.registry.model_folder). The
downgrade makes relative paths absolute again under the same models folder.
"""
import os
from pathlib import Path
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import context, op


# revision identifiers, used by Alembic.
revision: str = '0014'
down_revision: Union[str, Sequence[str], None] = '0013'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

model_versions = sa.table('model_versions', sa.column('id', sa.BigInteger()), sa.column('path', sa.Text()))


def _models_dir() -> Path:
    """The migrating machine's models folder: handed over by db.migrate.upgrade, else from the settings."""
    given = context.config.attributes.get('models_dir')
    if given is not None:
        return Path(given)
    from core.settings import load_settings

    return load_settings().models_dir


def _relative(stored: str, models_dir: Path) -> str | None:
    path = Path(stored)
    if not path.is_absolute():
        return None
    for base, candidate in ((Path(os.path.abspath(models_dir)), Path(os.path.abspath(path))), (models_dir.resolve(), path.resolve())):
        if candidate != base and candidate.is_relative_to(base):
            return candidate.relative_to(base).as_posix()
    return None


def upgrade() -> None:
    """Upgrade schema."""
    models_dir = _models_dir()
    connection = op.get_bind()
    for model_id, stored in connection.execute(sa.select(model_versions.c.id, model_versions.c.path)).all():
        relative = _relative(stored, models_dir)
        if relative is not None:
            connection.execute(model_versions.update().where(model_versions.c.id == model_id).values(path=relative))


def downgrade() -> None:
    """Downgrade schema."""
    models_dir = Path(os.path.abspath(_models_dir()))
    connection = op.get_bind()
    for model_id, stored in connection.execute(sa.select(model_versions.c.id, model_versions.c.path)).all():
        if not Path(stored).is_absolute():
            connection.execute(model_versions.update().where(model_versions.c.id == model_id).values(path=str(models_dir / stored)))

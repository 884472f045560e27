"""One typed settings object, read from the environment.

``SHADOWLINE_DATA_DIR`` (images, the SQLite file, caches), ``SHADOWLINE_DATABASE_URL`` (SQLite
under the data folder by default; PostgreSQL for a plant with many lines) and
``SHADOWLINE_MODELS_DIR`` (model versions, the shipped one by default) are all a second,
independent installation needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: The model version shipped in the repository and registered by ``shadowline init``.
SHIPPED_MODEL_VERSION = "scratch-v2"


@dataclass(frozen=True)
class Settings:
    """Where Shadowline keeps its state.

    Attributes:
        data_dir: Folder for stored images, the default SQLite file and caches.
        database_url: SQLAlchemy URL of the database.
        models_dir: Folder holding one sub-folder per model version.
        plant_timezone: IANA time zone the pages show times in.
        max_training_jobs: Training jobs that may run at once (each takes every CPU core it gets).
        admission_target_rate: Share of normal phones the admission check's novelty threshold sends
            to people (None: each model version's own calibration, 1 % by default).
        admission_run_alarm: This many phones in a row refused by the admission check raise a
            severe alarm at once and step the line down (a lens cap, a dead camera).
    """

    data_dir: Path
    database_url: str
    models_dir: Path
    plant_timezone: str
    max_training_jobs: int = 1
    admission_target_rate: float | None = None
    admission_run_alarm: int = 5

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def shipped_model_dir(self) -> Path:
        return self.models_dir / SHIPPED_MODEL_VERSION


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Build settings from ``environ`` (the process environment when omitted)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("SHADOWLINE_DATA_DIR") or PROJECT_ROOT / "data").resolve()
    database_url = env.get("SHADOWLINE_DATABASE_URL") or f"sqlite:///{data_dir / 'shadowline.db'}"
    models_dir = Path(env.get("SHADOWLINE_MODELS_DIR") or PROJECT_ROOT / "models").resolve()
    timezone = env.get("SHADOWLINE_TIMEZONE") or "UTC"
    jobs = env.get("SHADOWLINE_MAX_TRAINING_JOBS") or "1"
    if not jobs.isdigit() or int(jobs) < 1:
        raise ValueError(f"SHADOWLINE_MAX_TRAINING_JOBS must be a whole number of at least 1, got {jobs!r}")
    target = env.get("SHADOWLINE_ADMISSION_TARGET_RATE") or None
    try:
        target_rate = float(target) if target is not None else None
    except ValueError:
        target_rate = -1.0
    if target_rate is not None and not 0.0001 <= target_rate <= 0.5:
        raise ValueError(f"SHADOWLINE_ADMISSION_TARGET_RATE must be a share between 0.0001 and 0.5 (0.01 = 1 %), got {target!r}")
    run = env.get("SHADOWLINE_ADMISSION_RUN_ALARM") or "5"
    if not run.isdigit() or not 1 <= int(run) <= 1000:
        raise ValueError(f"SHADOWLINE_ADMISSION_RUN_ALARM must be a whole number from 1 to 1000, got {run!r}")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        models_dir=models_dir,
        plant_timezone=timezone,
        max_training_jobs=int(jobs),
        admission_target_rate=target_rate,
        admission_run_alarm=int(run),
    )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()

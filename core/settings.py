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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from core import validation

PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Default of ``SHADOWLINE_MAX_IMAGE_MB``: a camera frame is a few MiB; 50 leaves room for raw formats.
DEFAULT_MAX_IMAGE_MB = 50.0
#: The largest limit accepted (the file is held in memory while it is checked and stored).
MAX_IMAGE_MB_CEILING = 4096.0

#: Defaults of ``SHADOWLINE_SESSION_IDLE_MINUTES`` and ``SHADOWLINE_SESSION_HOURS``: an hour without a
#: click signs a browser out; no sign-in outlives a long shift.
DEFAULT_SESSION_IDLE_MINUTES = 60.0
#: Default of ``SHADOWLINE_REVIEW_MIN_LOOK_S`` (see Settings.review_min_look_s): well under any real look at a phone.
DEFAULT_REVIEW_MIN_LOOK_S = 0.7
DEFAULT_SESSION_HOURS = 12.0

#: The model version shipped in the repository and registered by ``shadowline init``.
SHIPPED_MODEL_VERSION = "scratch-v2"


class SettingsError(ValueError):
    """An environment setting outside its valid range (the message names the variable)."""


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
        max_image_mb: Largest image file ``ingest`` and ``watch`` accept, in MiB (larger ones are refused
            before they are read).
        gates_count_simulated: Whether the simulated inspector's judgements count as evidence for the
            ladder's gates and rollback (a demonstration may opt in; a plant counts only people and labels).
        session_idle_minutes: A signed-in browser that does nothing for this long is signed out.
        session_hours: A sign-in lasts at most this long, busy or not.
        review_min_look_s: The Review queue records no verdict on a phone shown for less than this
            (seconds since it was put on screen): a key pressed twice would otherwise judge the next
            phone before anyone saw it.
    """

    data_dir: Path
    database_url: str
    models_dir: Path
    plant_timezone: str
    max_training_jobs: int = 1
    admission_target_rate: float | None = None
    admission_run_alarm: int = 5
    max_image_mb: float = DEFAULT_MAX_IMAGE_MB
    #: How long a worker or service waits on start for the schema to reach this code's revision
    #: (``shadowline migrate`` running elsewhere) before refusing, in seconds.
    schema_wait_s: float = 120.0
    #: PostgreSQL connection behaviour: pool sizes, timeouts (``SHADOWLINE_DB_*``; see db.engine.ConnectionOptions).
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_connect_timeout_s: int = 10
    db_statement_timeout_s: int = 120
    db_idle_in_transaction_timeout_s: int = 60
    #: Root of the stored images, shared by every machine of a plant (a mount); the data folder by
    #: default. Stored image paths are relative to it, so they mean the same on every machine.
    shared_dir: Path | None = None
    gates_count_simulated: bool = False
    session_idle_minutes: float = DEFAULT_SESSION_IDLE_MINUTES
    session_hours: float = DEFAULT_SESSION_HOURS
    review_min_look_s: float = DEFAULT_REVIEW_MIN_LOOK_S

    def __post_init__(self) -> None:
        validation.integer("SHADOWLINE_MAX_TRAINING_JOBS", self.max_training_jobs, minimum=1)
        validation.number("SHADOWLINE_MAX_IMAGE_MB", self.max_image_mb, minimum=0, exclusive_minimum=True, maximum=MAX_IMAGE_MB_CEILING)
        if self.admission_target_rate is not None:
            validation.number("SHADOWLINE_ADMISSION_TARGET_RATE", self.admission_target_rate, minimum=0.0001, maximum=0.5)
        validation.integer("SHADOWLINE_ADMISSION_RUN_ALARM", self.admission_run_alarm, minimum=1, maximum=1000)
        validation.number("SHADOWLINE_SESSION_IDLE_MINUTES", self.session_idle_minutes, minimum=1, maximum=7 * 24 * 60)
        validation.number("SHADOWLINE_SESSION_HOURS", self.session_hours, minimum=0.1, maximum=30 * 24)
        validation.number("SHADOWLINE_REVIEW_MIN_LOOK_S", self.review_min_look_s, minimum=0, maximum=10)

    @property
    def max_image_bytes(self) -> int:
        """The image size limit in bytes (a file of exactly this size is accepted)."""
        return int(self.max_image_mb * 1024 * 1024)

    @property
    def store_dir(self) -> Path:
        """Where stored image paths (``images/...``) are relative to: ``SHADOWLINE_SHARED_DIR``, else the data folder."""
        return self.shared_dir or self.data_dir

    @property
    def images_dir(self) -> Path:
        return self.store_dir / "images"

    def image_file(self, stored_path: str) -> Path:
        """The file of a stored image path (as kept in ``inspections.image_path``) on this machine."""
        return self.store_dir / stored_path

    @property
    def session_secret_file(self) -> Path:
        """The key that signs the session cookies (made on first use, readable by the owner only)."""
        return self.data_dir / "session.key"

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
    shared = env.get("SHADOWLINE_SHARED_DIR")
    shared_dir = Path(shared).resolve() if shared else None
    timezone = env.get("SHADOWLINE_TIMEZONE") or "UTC"
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(f"SHADOWLINE_TIMEZONE must be an IANA time zone such as UTC or Europe/Berlin, got {timezone!r}") from None
    try:
        jobs = validation.integer("SHADOWLINE_MAX_TRAINING_JOBS", env.get("SHADOWLINE_MAX_TRAINING_JOBS") or "1", minimum=1)
        raw_image_mb = env.get("SHADOWLINE_MAX_IMAGE_MB") or DEFAULT_MAX_IMAGE_MB
        image_mb = validation.number("SHADOWLINE_MAX_IMAGE_MB", raw_image_mb, minimum=0, exclusive_minimum=True, maximum=MAX_IMAGE_MB_CEILING)
        target = env.get("SHADOWLINE_ADMISSION_TARGET_RATE") or None
        target_rate = validation.number("SHADOWLINE_ADMISSION_TARGET_RATE", target, minimum=0.0001, maximum=0.5) if target is not None else None
        run = validation.integer("SHADOWLINE_ADMISSION_RUN_ALARM", env.get("SHADOWLINE_ADMISSION_RUN_ALARM") or "5", minimum=1, maximum=1000)
        schema_wait = validation.number("SHADOWLINE_SCHEMA_WAIT_S", env.get("SHADOWLINE_SCHEMA_WAIT_S") or "120", minimum=0, maximum=86400)
        connection = {
            field: validation.integer(name, env.get(name) or default, minimum=minimum, maximum=maximum)
            for field, name, default, minimum, maximum in (
                ("db_pool_size", "SHADOWLINE_DB_POOL_SIZE", "5", 1, 1000),
                ("db_max_overflow", "SHADOWLINE_DB_MAX_OVERFLOW", "5", 0, 1000),
                ("db_connect_timeout_s", "SHADOWLINE_DB_CONNECT_TIMEOUT_S", "10", 1, 3600),
                ("db_statement_timeout_s", "SHADOWLINE_DB_STATEMENT_TIMEOUT_S", "120", 0, 86400),
                ("db_idle_in_transaction_timeout_s", "SHADOWLINE_DB_IDLE_IN_TRANSACTION_TIMEOUT_S", "60", 0, 86400),
            )
        }
        count_simulated = validation.boolean("SHADOWLINE_GATES_COUNT_SIMULATED", env.get("SHADOWLINE_GATES_COUNT_SIMULATED") or "false")
        idle = validation.number(
            "SHADOWLINE_SESSION_IDLE_MINUTES", env.get("SHADOWLINE_SESSION_IDLE_MINUTES") or DEFAULT_SESSION_IDLE_MINUTES, minimum=1, maximum=7 * 24 * 60
        )
        hours = validation.number("SHADOWLINE_SESSION_HOURS", env.get("SHADOWLINE_SESSION_HOURS") or DEFAULT_SESSION_HOURS, minimum=0.1, maximum=30 * 24)
        min_look_raw = env.get("SHADOWLINE_REVIEW_MIN_LOOK_S") or DEFAULT_REVIEW_MIN_LOOK_S
        min_look = validation.number("SHADOWLINE_REVIEW_MIN_LOOK_S", min_look_raw, minimum=0, maximum=10)
        return Settings(
            data_dir=data_dir,
            database_url=database_url,
            models_dir=models_dir,
            plant_timezone=timezone,
            max_training_jobs=jobs,
            max_image_mb=image_mb,
            admission_target_rate=target_rate,
            admission_run_alarm=run,
            schema_wait_s=schema_wait,
            shared_dir=shared_dir,
            **connection,
            gates_count_simulated=count_simulated,
            session_idle_minutes=idle,
            session_hours=hours,
            review_min_look_s=min_look,
        )
    except validation.RangeError as error:
        raise SettingsError(str(error)) from None


@cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return load_settings()

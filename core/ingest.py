"""Phones in: store an image under the data folder and queue it for the worker.

Every file is copied under a content-addressed name (``images/<line>/<day>/<sha256>.<ext>``)
before its row is queued, so the original may be deleted by the camera's software at once.
Nothing is dropped: a file that is not an image is stored and queued like any other, and the
worker records it as failed with the decoder's error and sends the phone to a person.
``ingest_file`` also checks the file up front so the command line can say what is wrong.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from core.imaging import InvalidImageError, decode_image_bytes
from core.settings import Settings
from db.engine import Database
from db.pipeline import queue_inspection

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class IngestResult:
    """What happened to one file."""

    source: Path
    inspection_id: int
    stored_path: str
    problem: str | None  # why the worker will fail it, or None for a readable image


def store_image_bytes(settings: Settings, line_name: str, data: bytes, suffix: str) -> tuple[str, str]:
    """Write ``data`` under the data folder by its sha256; returns (relative path, sha256)."""
    digest = hashlib.sha256(data).hexdigest()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix or "") else ".bin"
    relative = Path("images") / _SAFE.sub("_", line_name) / day / f"{digest}{suffix}"
    target = settings.data_dir / relative
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: the worker never reads half a file
    return relative.as_posix(), digest


def serial_from_name(path: Path) -> str:
    """A phone serial from a camera file name (its stem, made safe)."""
    return _SAFE.sub("_", path.stem)[:64] or "unknown"


def ingest_file(database: Database, settings: Settings, *, line_id: int, line_name: str, path: Path, source: str = "ingest") -> IngestResult:
    """Copy one file into the data folder and queue it."""
    data = path.read_bytes()
    problem = None
    try:
        decode_image_bytes(data, source=path.name)
    except InvalidImageError as error:
        problem = str(error)
    relative, digest = store_image_bytes(settings, line_name, data, path.suffix)
    with database.write() as session:
        inspection_id = queue_inspection(
            session=session, line_id=line_id, serial=serial_from_name(path), image_path=relative, image_sha256=digest, source=source
        )
    return IngestResult(path, inspection_id, relative, problem)


def expand_paths(paths: Iterable[Path]) -> list[Path]:
    """Files named, and the files inside folders named (sorted); a missing path raises."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


def watch_folder(
    database: Database,
    settings: Settings,
    *,
    line_id: int,
    line_name: str,
    folder: Path,
    on_ingest: Callable[[IngestResult], None],
    poll_seconds: float = 1.0,
    settle_seconds: float = 1.0,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Ingest files that appear in ``folder``, then move them to ``folder/ingested/``.

    A file is taken once its size has not changed for ``settle_seconds`` (the camera finished
    writing it). Files the ingest cannot even read stay and are reported each round.

    Returns:
        The number of files ingested.
    """
    done_dir = folder / "ingested"
    done_dir.mkdir(parents=True, exist_ok=True)
    sizes: dict[Path, tuple[int, float]] = {}
    count = 0
    started = time.monotonic()
    while not should_stop() and (max_seconds is None or time.monotonic() - started < max_seconds):
        now = time.monotonic()
        for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            size = path.stat().st_size
            seen = sizes.get(path)
            if seen is None or seen[0] != size:
                sizes[path] = (size, now)
                continue
            if now - seen[1] < settle_seconds:
                continue
            result = ingest_file(database, settings, line_id=line_id, line_name=line_name, path=path, source="watch")
            path.replace(done_dir / f"{result.inspection_id}-{path.name}")
            sizes.pop(path, None)
            count += 1
            on_ingest(result)
        time.sleep(poll_seconds)
    return count

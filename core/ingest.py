"""Phones in: store an image under the data folder and queue it for the worker.

Every file is copied under a content-addressed name (``images/<line>/<day>/<sha256>.<ext>``)
before its row is queued, so the original may be deleted by the camera's software at once.
Nothing that could be a phone is dropped: a file that is not an image is stored and queued like
any other, and the worker records it as failed with the decoder's error and sends the phone to a
person. ``ingest_file`` also checks the file up front so the command line can say what is wrong.

What is never taken, each file refused with its reason while the others go on: symbolic links
(to files or folders: never followed, so a link to ``/etc/passwd`` is not copied), anything that
resolves outside the folder given, and files over ``SHADOWLINE_MAX_IMAGE_MB`` (checked by size
before reading, and never more than the limit + 1 bytes read). A full or read-only data folder is
a :class:`StorageError`, with no partial file left behind.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import socket
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from core.imaging import InvalidImageError, decode_image_bytes
from core.settings import Settings
from db import heartbeats
from db.engine import Database
from db.pipeline import queue_inspection

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
_SAFE = re.compile(r"[^A-Za-z0-9._-]")
#: What a full, read-only or forbidden data folder raises: reported per file, never a traceback.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT})


class IngestRefused(Exception):
    """A file that is not taken (a link, outside the folder, too large, unreadable): nothing stored or queued."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: refused: {reason}")
        self.path = path
        self.reason = reason


#: The image path recorded for a phone whose image the store could not take (no such file exists).
NOT_STORED_PREFIX = "not-stored/"


class StorageError(Exception):
    """The data folder cannot take a file (full, read-only, not permitted); no partial file is left."""


@dataclass(frozen=True)
class IngestResult:
    """What happened to one file."""

    source: Path
    inspection_id: int
    stored_path: str
    problem: str | None  # why the worker will fail it, or None for a readable image


def store_image_bytes(settings: Settings, line_name: str, data: bytes, suffix: str) -> tuple[str, str]:
    """Write ``data`` under the data folder by its sha256; returns (relative path, sha256).

    Raises:
        StorageError: The data folder cannot take the file (full, read-only, not permitted); no
            partial or temporary file is left behind.
    """
    digest = hashlib.sha256(data).hexdigest()
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", suffix or "") else ".bin"
    relative = Path("images") / _SAFE.sub("_", line_name) / day / f"{digest}{suffix}"
    target = settings.image_file(relative.as_posix())
    tmp = target.with_name(f".{target.name}.{time.monotonic_ns()}.tmp")
    try:
        if target.exists():
            return relative.as_posix(), digest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        tmp.replace(target)  # atomic: the worker never reads half a file
        with contextlib.suppress(OSError):  # best effort: a store with images in it counts as one anyway
            mark_store(settings)  # after an image is stored: a failed store leaves nothing behind
    except BaseException as error:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)  # a full disk must not leave half a copy behind
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            raise StorageError(f"cannot store the image in {settings.store_dir}: {os.strerror(error.errno or 0).lower()}") from error
        raise
    return relative.as_posix(), digest


#: A file at the root of the image store: a worker that does not find it is looking at a folder
#: that is not the plant's store (a share not mounted, a wrong SHADOWLINE_SHARED_DIR).
STORE_MARKER = ".shadowline-image-store"


def mark_store(settings: Settings) -> None:
    marker = settings.images_dir / STORE_MARKER
    if not marker.exists():
        settings.images_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text("Shadowline's stored images; image paths in the database are relative to the folder above this one.\n")


def store_problem(settings: Settings) -> str | None:
    """Why this machine cannot read the image store (None when it can): names the setting and folder."""
    marker = settings.images_dir / STORE_MARKER
    try:
        if marker.is_file() or (settings.images_dir.is_dir() and any(settings.images_dir.iterdir())):
            return None  # marked, or a store from before the marker (not an empty mount point)
    except OSError as error:
        return f"the image store {settings.images_dir} cannot be read: {error}"
    setting = "SHADOWLINE_SHARED_DIR" if settings.shared_dir else "SHADOWLINE_DATA_DIR"
    return f"the image store is missing: {settings.images_dir} has no {STORE_MARKER} (is the share mounted? {setting}={settings.store_dir})"


def serial_from_name(path: Path) -> str:
    """A phone serial from a camera file name (its stem, made safe)."""
    return _SAFE.sub("_", path.stem)[:64] or "unknown"


def read_source(path: Path, *, root: Path, limit: int) -> bytes:
    """Read a camera file without following a link, leaving ``root`` or reading more than ``limit`` + 1 bytes.

    Raises:
        IngestRefused: The file is a symbolic link, lies outside ``root``, is not a regular file,
            is larger than ``limit`` bytes, or cannot be read; the reason says which.
    """
    if path.is_symlink():
        raise IngestRefused(path, "a symbolic link; links are never followed (put the file itself in the folder)")
    if not path.resolve().is_relative_to(root.resolve()):
        raise IngestRefused(path, f"outside the folder given ({root}); only files inside it are read")
    try:
        # O_NOFOLLOW: a link swapped in after the check above is refused, not followed;
        # O_NONBLOCK: a FIFO does not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise IngestRefused(path, "a symbolic link; links are never followed (put the file itself in the folder)") from None
        raise IngestRefused(path, f"cannot be read: {os.strerror(error.errno or 0).lower()}") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IngestRefused(path, "not a regular file")
        if info.st_size > limit:
            raise IngestRefused(path, f"{_mib(info.st_size)} is over the {_mib(limit)} limit (SHADOWLINE_MAX_IMAGE_MB)")
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise IngestRefused(path, f"cannot be read: {os.strerror(error.errno or 0).lower()}") from None
    if len(data) > limit:  # it grew after the size was checked
        raise IngestRefused(path, f"over the {_mib(limit)} limit (SHADOWLINE_MAX_IMAGE_MB)")
    return data


def _mib(size: int) -> str:
    return f"{size / 1024 / 1024:.1f} MiB" if size >= 102_400 else f"{size} bytes"


def ingest_file(
    database: Database,
    settings: Settings,
    *,
    line_id: int,
    line_name: str,
    path: Path,
    source: str = "ingest",
    root: Path | None = None,
) -> IngestResult:
    """Copy one file into the data folder and queue it.

    Args:
        root: The folder the file was found in (its own folder when omitted); nothing outside it is read.

    Raises:
        IngestRefused: The file is not taken (a link, outside ``root``, too large, unreadable).
        StorageError: The data folder cannot take it (full, read-only, not permitted).
    """
    data = read_source(path, root=path.parent if root is None else root, limit=settings.max_image_bytes)
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


@dataclass(frozen=True)
class SourceFile:
    """A file to ingest and the folder it was found in (the only place it may be read from)."""

    path: Path
    root: Path


def expand_paths(paths: Iterable[Path]) -> list[SourceFile]:
    """Files named, and the files inside folders named (sorted, hidden ones skipped); a missing path raises.

    Links are listed, never followed (not even links to folders), so that each is refused by
    :func:`ingest_file` with its reason while the other files go on.
    """
    files: list[SourceFile] = []
    for path in paths:
        if path.is_symlink() or path.is_file():
            files.append(SourceFile(path, path.parent))
        elif path.is_dir():
            found: list[Path] = []
            for folder, dirnames, filenames in os.walk(path, followlinks=False):
                here = Path(folder)
                dirnames[:] = [d for d in dirnames if not d.startswith(".")]
                found.extend(here / d for d in dirnames if (here / d).is_symlink())
                found.extend(here / f for f in filenames if not f.startswith("."))
            files.extend(SourceFile(p, path) for p in sorted(found))
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return files


#: Back-off of ``watch`` while the data folder or database cannot take files: 1 s doubling to 60 s.
FIRST_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 60.0
#: How often ``watch`` refreshes its heartbeat (well inside ``db.heartbeats.ALIVE_SECONDS``).
WATCH_BEAT_SECONDS = 5.0


def watch_folder(
    database: Database,
    settings: Settings,
    *,
    line_id: int,
    line_name: str,
    folder: Path,
    on_ingest: Callable[[IngestResult], None],
    on_refused: Callable[[IngestRefused], None] = lambda refusal: None,
    on_problem: Callable[[str], None] = lambda problem: None,
    poll_seconds: float = 1.0,
    settle_seconds: float = 1.0,
    max_seconds: float | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    first_backoff_seconds: float = FIRST_BACKOFF_SECONDS,
    max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
) -> int:
    """Ingest files that appear in ``folder``, then move them to ``folder/ingested/``.

    A file is taken once its size has not changed for ``settle_seconds`` (the camera finished
    writing it). Links, files over the size limit and unreadable files are refused one by one
    (``on_refused``) and moved to ``folder/refused/``. When the data folder or the database
    cannot take files (a full or read-only disk), the file stays where it is, ``on_problem``
    hears why, and the watcher keeps watching, waiting ``first_backoff_seconds`` doubling to
    ``max_backoff_seconds`` between tries. Its state is in a heartbeat row (``shadowline status``).

    Returns:
        The number of files ingested.
    """
    watcher = _Watcher(database, line_name=line_name, folder=folder)
    taken: set[Path] = set()  # queued but could not be moved aside: never queued twice
    refused: set[Path] = set()  # refused but could not be moved aside: reported once
    sizes: dict[Path, tuple[int, float]] = {}
    count = 0
    backoff = 0.0
    started = time.monotonic()
    deadline = None if max_seconds is None else started + max_seconds

    def running() -> bool:
        return not should_stop() and (deadline is None or time.monotonic() < deadline)

    def pause(seconds: float) -> None:
        end = time.monotonic() + seconds
        while running() and time.monotonic() < end:
            watcher.beat(count)
            time.sleep(max(0.0, min(0.1, end - time.monotonic())))

    def one_round() -> None:
        nonlocal count
        now = time.monotonic()
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path in taken or path in refused:
                continue
            if not path.is_symlink() and not path.is_file():
                continue  # ingested/, refused/, sub-folders, FIFOs: not camera files
            size = path.lstat().st_size
            seen = sizes.get(path)
            if not path.is_symlink() and (seen is None or seen[0] != size):
                sizes[path] = (size, now)
                continue
            if seen is not None and now - seen[1] < settle_seconds:
                continue
            try:
                result = ingest_file(database, settings, line_id=line_id, line_name=line_name, path=path, source="watch", root=folder)
            except IngestRefused as refusal:
                sizes.pop(path, None)
                on_refused(refusal)
                if not _move_aside(path, folder / "refused", path.name):
                    refused.add(path)
                continue
            sizes.pop(path, None)  # kept while the disk was full: the file is tried again without settling anew
            count += 1
            on_ingest(result)
            if not _move_aside(path, folder / "ingested", f"{result.inspection_id}-{path.name}"):
                taken.add(path)
                on_problem(f"{path}: queued as inspection {result.inspection_id} but cannot be moved to {folder / 'ingested'}; it will not be queued again")

    try:
        while running():
            try:
                (folder / "ingested").mkdir(exist_ok=True)
                one_round()
            except (StorageError, OSError, SQLAlchemyError) as error:
                backoff = min(max_backoff_seconds, backoff * 2 if backoff else first_backoff_seconds)
                problem = f"{_one_line(error)}; trying again in {backoff:g} s"
                watcher.set_state("backing_off", problem, count)
                on_problem(problem)
                pause(backoff)
                continue
            if backoff:
                backoff = 0.0
                watcher.set_state("running", "", count)
            watcher.beat(count)
            pause(poll_seconds)
    finally:
        watcher.set_state("stopped", "", count)
    return count


def _one_line(error: BaseException) -> str:
    if isinstance(error, SQLAlchemyError):
        original = getattr(error, "orig", None)
        return f"database: {original or type(error).__name__}".splitlines()[0]
    if isinstance(error, OSError) and not isinstance(error, StorageError) and error.errno:
        return f"{error.filename or 'folder'}: {os.strerror(error.errno).lower()}"
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _move_aside(path: Path, folder: Path, name: str) -> bool:
    """Move ``path`` (a link itself, never its target) into ``folder``; False when the drop folder refuses."""
    try:
        folder.mkdir(exist_ok=True)
        path.replace(folder / name)
    except OSError:
        return False
    return True


class _Watcher:
    """The watcher's heartbeat row: best effort, since the database may sit on the same full disk."""

    def __init__(self, database: Database, *, line_name: str, folder: Path) -> None:
        self.database = database
        self.watcher_id = watcher_id(line_name)
        self.folder = folder
        self.state = "running"
        self.detail = ""
        self.last_beat = -float("inf")

    def set_state(self, state: str, detail: str, processed: int) -> None:
        self.state, self.detail = state, detail
        self.last_beat = -float("inf")
        self.beat(processed)

    def beat(self, processed: int) -> None:
        if time.monotonic() - self.last_beat < WATCH_BEAT_SECONDS:
            return
        self.last_beat = time.monotonic()
        text = f"{self.folder}" + (f": {self.detail}" if self.detail else "")
        try:
            with self.database.write() as session:
                heartbeats.beat(session=session, worker_id=self.watcher_id, processed=processed, state=self.state, model_status=text)
        except SQLAlchemyError as error:
            log.warning("watcher heartbeat not written: %s", _one_line(error))


def watcher_id(line_name: str) -> str:
    """The heartbeat id of a ``watch`` process: ``watch:<line>:<host>-<pid>`` (at most 64 characters)."""
    return f"{heartbeats.WATCHER_PREFIX}{line_name}:{socket.gethostname()}-{os.getpid()}"[:64]

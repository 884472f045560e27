"""Phones the service answered while the database did not answer, written once it answers again.

While PostgreSQL restarts (or the network to it drops) the service still answers every posted
phone: the line's fail-safe (``database_busy``; never ``pass``), at once. Such a phone has no row
yet, or a row without its answer. Its image is stored at once (the image store is not the
database) and the phone is kept here; one thread writes the kept phones, oldest first, as soon as
the database answers, retrying with back-off (0.5 s doubling to 5 s), so after the restart every
posted phone is in the database once, routed to a person. Writing is idempotent by (line, serial):
a phone already recorded and answered (by a station's retry, or before the failure) is left as it is.

Kept phones survive the service: each is also written to a journal folder in the data folder
(``service-backlog/``, one small JSON file per phone, written to a temporary name, synced and
renamed, so a file is whole or absent) and its file is removed once the phone is in the database.
A service killed or restarted during the outage reads the folder when it starts and writes what
it finds; the phone's line is read again then, with the level, active model and fail-safe the gate
acted under taken from the file. Where the file cannot be written (a full disk), the phone is
kept in memory only, and the log says so.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from core.vocabulary import AutomationLevel, FailsafeReason
from db.engine import is_transient
from db.lines import LineConfig

log = logging.getLogger("shadowline.service")

#: The first retry's delay and the longest, in seconds, while the database does not answer.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


@dataclass(frozen=True)
class UnrecordedPhone:
    """A phone the gate was answered for with the fail-safe, waiting to be written (its image is stored).

    The line is kept as the gate acted under it: its id and name, and the level, active model and
    fail-safe action of that moment; the rest of its settings are read again when it is written.
    """

    line_id: int
    line_name: str
    level: AutomationLevel
    active_model_id: int | None
    failsafe_action: str
    serial: str
    image_path: str
    image_sha256: str
    meta: dict[str, object]
    reason: FailsafeReason
    latency_ms: float
    #: The journal file's name (set by :class:`Backlog`).
    journal_name: str = field(default="", compare=False)

    @classmethod
    def of(
        cls, line: LineConfig, serial: str, image_path: str, image_sha256: str, meta: dict[str, object], reason: FailsafeReason, latency_ms: float
    ) -> UnrecordedPhone:
        return cls(line.id, line.name, line.level, line.active_model_id, line.failsafe_action, serial, image_path, image_sha256, meta, reason, latency_ms)

    def to_json(self) -> str:
        meta = {key: value.isoformat() if isinstance(value, datetime) else value for key, value in self.meta.items()}
        return json.dumps(
            {
                "line_id": self.line_id,
                "line_name": self.line_name,
                "level": self.level.value,
                "active_model_id": self.active_model_id,
                "failsafe_action": self.failsafe_action,
                "serial": self.serial,
                "image_path": self.image_path,
                "image_sha256": self.image_sha256,
                "meta": meta,
                "reason": self.reason.value,
                "latency_ms": self.latency_ms,
            }
        )

    @classmethod
    def from_json(cls, text: str, journal_name: str = "") -> UnrecordedPhone:
        data = json.loads(text)
        meta = dict(data["meta"])
        if isinstance(meta.get("captured_at"), str):
            meta["captured_at"] = datetime.fromisoformat(meta["captured_at"])
        return cls(
            line_id=int(data["line_id"]),
            line_name=str(data["line_name"]),
            level=AutomationLevel(data["level"]),
            active_model_id=data["active_model_id"],
            failsafe_action=str(data["failsafe_action"]),
            serial=str(data["serial"]),
            image_path=str(data["image_path"]),
            image_sha256=str(data["image_sha256"]),
            meta=meta,
            reason=FailsafeReason(data["reason"]),
            latency_ms=float(data["latency_ms"]),
            journal_name=journal_name,
        )


class Journal:
    """The kept phones on disk: one JSON file each, whole or absent."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, phone: UnrecordedPhone) -> str:
        """Store ``phone``; returns its file's name. Raises OSError when it cannot (a full disk)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.json"
        temporary = self.folder / f".{name}.tmp"
        try:
            with open(temporary, "w", encoding="utf-8") as file:
                file.write(phone.to_json())
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.folder / name)
        except OSError:
            temporary.unlink(missing_ok=True)
            raise
        directory = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return name

    def remove(self, name: str) -> None:
        if name:
            (self.folder / name).unlink(missing_ok=True)

    def read(self) -> list[UnrecordedPhone]:
        """Every kept phone on disk, oldest first; a file that cannot be read is named in the log and left."""
        if not self.folder.is_dir():
            return []
        phones = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                phones.append(UnrecordedPhone.from_json(path.read_text(encoding="utf-8"), journal_name=path.name))
            except (OSError, ValueError, KeyError, TypeError) as error:
                log.error("kept phone %s cannot be read (%s); left in place for a person to look at", path, error)
        return phones


class Backlog:
    """Kept phones and the thread that writes them with ``record`` once the database answers."""

    def __init__(self, record: Callable[[UnrecordedPhone], None], journal: Journal | None = None) -> None:
        self._record = record
        self._journal = journal
        #: Kept phones found on disk at start (a service killed or restarted while the database was away).
        found = journal.read() if journal is not None else []
        self._phones: deque[UnrecordedPhone] = deque(found)
        if found:
            log.warning("%d phone(s) answered with the fail-safe by an earlier run are not yet written; writing them now", len(found))
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backlog", daemon=True)
        self._thread.start()

    def add(self, phone: UnrecordedPhone) -> None:
        if self._journal is not None:
            try:
                phone = replace(phone, journal_name=self._journal.write(phone))
            except OSError as error:
                log.error("phone %s on %s: kept in memory only, its journal file cannot be written (%s)", phone.serial, phone.line_name, error)
        with self._changed:
            self._phones.append(phone)
            self._changed.notify_all()
        log.warning("phone %s on %s answered with the fail-safe (%s); written once the database answers", phone.serial, phone.line_name, phone.reason.value)

    def __len__(self) -> int:
        with self._changed:
            return len(self._phones)

    def wait_empty(self, timeout: float | None = None) -> bool:
        """Until every kept phone is written; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._phones, timeout=timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Give the thread ``timeout`` seconds to write what is kept, then stop it (naming what is left)."""
        self.wait_empty(timeout)
        self._closing.set()
        with self._changed:
            self._changed.notify_all()
            left = [phone.serial for phone in self._phones]
        self._thread.join(timeout=5)
        if left and self._journal is not None:
            log.warning(
                "%d phone(s) answered with the fail-safe are not yet written (the database did not answer); the next start writes them: %s",
                len(left),
                ", ".join(left),
            )
        elif left:
            log.error("%d phone(s) answered with the fail-safe were never written (the database did not answer): %s", len(left), ", ".join(left))

    def _loop(self) -> None:
        delay = RETRY_FIRST_S
        while not self._closing.is_set():
            with self._changed:
                self._changed.wait_for(lambda: self._phones or self._closing.is_set())
                if self._closing.is_set():
                    return
                phone = self._phones[0]
            try:
                self._record(phone)
            except Exception as error:
                if is_transient(error):
                    self._closing.wait(delay)  # still not answering: try again later, the same phone first
                    delay = min(delay * 2, RETRY_MAX_S)
                    continue
                log.exception("phone %s on %s could not be written; it is dropped from the backlog", phone.serial, phone.line_name)
            delay = RETRY_FIRST_S
            if self._journal is not None:
                self._journal.remove(phone.journal_name)
            with self._changed:
                self._phones.popleft()
                self._changed.notify_all()

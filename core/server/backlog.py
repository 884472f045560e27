"""Phones the service answered while the database did not answer, written once it answers again.

While PostgreSQL restarts (or the network to it drops) the service still answers every posted
phone: the line's fail-safe (``database_busy``; never ``pass``), at once. Such a phone has no row
yet, or a row without its answer. Its image is stored at once (the image store is not the
database) and the phone is kept here; one thread writes the kept phones, oldest first, as soon as
the database answers, retrying with back-off (0.5 s doubling to 5 s), so after the restart every
posted phone is in the database once, routed to a person. Writing is idempotent by (line, serial):
a phone already recorded and answered (by a station's retry, or before the failure) is left as it is.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from core.vocabulary import FailsafeReason
from db.engine import is_transient
from db.lines import LineConfig

log = logging.getLogger("shadowline.service")

#: The first retry's delay and the longest, in seconds, while the database does not answer.
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 5.0


@dataclass(frozen=True)
class UnrecordedPhone:
    """A phone the gate was answered for with the fail-safe, waiting to be written (its image is stored)."""

    line: LineConfig
    serial: str
    image_path: str
    image_sha256: str
    meta: dict[str, object]
    reason: FailsafeReason
    latency_ms: float


class Backlog:
    """Kept phones and the thread that writes them with ``record`` once the database answers."""

    def __init__(self, record: Callable[[UnrecordedPhone], None]) -> None:
        self._record = record
        self._phones: deque[UnrecordedPhone] = deque()
        self._changed = threading.Condition()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="backlog", daemon=True)
        self._thread.start()

    def add(self, phone: UnrecordedPhone) -> None:
        with self._changed:
            self._phones.append(phone)
            self._changed.notify_all()
        log.warning("phone %s on %s answered with the fail-safe (%s); written once the database answers", phone.serial, phone.line.name, phone.reason.value)

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
        if left:
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
                log.exception("phone %s on %s could not be written; it is dropped from the backlog", phone.serial, phone.line.name)
            delay = RETRY_FIRST_S
            with self._changed:
                self._phones.popleft()
                self._changed.notify_all()

"""The background worker: claims queued phones, inspects them, routes them, writes it all down.

Runs as its own process (``shadowline worker``). Each round it claims a small batch with a lease,
and for each phone: decodes the stored image and runs the inspection path it shares with the
prediction server (:mod:`core.inspection`: input metrics, the line's active (blue) model and its
candidate (green), the admission check, the routing policy), then writes metrics, predictions, routing and (when the model decides) the final decision in one
transaction, guarded by the lease. A worker killed at any moment loses nothing: an unfinished
phone's lease expires and another round reclaims it; a finished phone was committed whole.

Failures never pass a phone: an unreadable image is marked failed and routed to a person; a
model that cannot be loaded sends its lines' phones to people, and says so in the audit log and
the heartbeat, until it loads again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import FrameType

import numpy as np

from core import inspection
from core.drift.monitor import DriftMonitor
from core.image_metrics import InputMetrics, scaled_for_metrics
from core.imaging import InvalidImageError, read_image
from core.ingest import store_problem
from core.inspection import Inspector, PhoneInspection, note_written, run_due_drift_checks, step_down_lines_whose_model_failed
from core.settings import Settings
from db import heartbeats
from db.engine import Database, is_transient
from db.lines import LineConfig, list_lines
from db.pipeline import MAX_ATTEMPTS, ClaimedInspection, PhoneResult, claim_batch, record_results, release_claims, repeated_images, requeue_stale

log = logging.getLogger("shadowline.worker")

#: Phones claimed in the first round for each phone inspected at once. Later rounds claim about
#: :data:`BATCH_SECONDS` of work at the worker's own recent pace, between :data:`MIN_BATCH_PER_STREAM`
#: and :data:`MAX_BATCH_PER_STREAM` a stream: a round's claim, its line reads, its write transaction,
#: its drift bookkeeping and the wait for its last phone are paid once per batch. Two streams on 2
#: cores (INT8) drained 133-148 phones/s with 8 per stream, 146-174 with 16 and 166-189 with 64
#: (``shadowline bench worker``, README).
BATCH_PER_STREAM = 16
#: A round claims about this long of work, so a batch is inspected in well under its lease
#: however fast or slow the model and the machine are.
BATCH_SECONDS = 1.0
MIN_BATCH_PER_STREAM = 2
MAX_BATCH_PER_STREAM = 64
#: Heartbeats are written at most this often while the worker is busy (and every 2 s when idle).
HEARTBEAT_SECONDS = 1.0
#: A due drift check waits for a pause in the queue at most this long.
DRIFT_CHECK_MAX_WAIT_SECONDS = 10.0


#: Back-off while the database is unavailable: the first retry after this long, doubling up to the cap.
RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 10.0


@dataclass
class WorkerStats:
    processed: int = 0
    failed_images: int = 0
    lost_leases: int = 0
    #: Rounds that found the database unavailable (restart, network blip) and were retried.
    database_retries: int = 0
    #: Rounds that found the image store unreadable (phones given back to the queue).
    storage_waits: int = 0
    model_errors: dict[str, str] = field(default_factory=dict)


class StorageUnavailableError(RuntimeError):
    """This machine cannot read the image store (the message names the folder and the setting)."""


@dataclass(frozen=True)
class _Decoded:
    """A phone's image read ahead: decoded, resized for its input metrics (the detector reuses that copy), measured."""

    image: np.ndarray
    scaled: np.ndarray
    metrics: InputMetrics


@dataclass(frozen=True)
class _InspectedBatch:
    """A claimed batch after inspection, before its write."""

    lines: dict[int, LineConfig]
    results: list[PhoneResult]


class Worker:
    """One worker process's loop.

    Args:
        database: Where the queue is.
        settings: Data folder (images are stored relative to it).
        worker_id: A unique name; generated from host and pid when omitted.
        batch_size: Phones claimed per round, always; by default the worker claims about
            :data:`BATCH_SECONDS` of work at its recent pace (see :data:`BATCH_PER_STREAM`).
        lease_seconds: How long a claim holds before another worker may take the phone.
        threads: The cores the worker's inference may use (0 = every core). It inspects that
            many phones at once, each detector run on one thread: a small model spreads poorly
            over cores within one inference (onnxruntime's threads wait on each other between
            layers), so two phones at once on one core each gave 1.5-1.7x the images/s of one
            phone at a time on both cores (``shadowline bench worker``, README).
        monitor_drift: Check each line for drift every ``check_every`` phones (its drift settings,
            counted in the database so that restarts do not reset the count), and raise an alarm
            at once on a run of phones the admission check refused.
        freeze_after_load: Once the models are loaded, take every object alive then out of the
            garbage collector's sight (:func:`core.inspection.freeze_long_lived`): for a process that
            runs until stopped (``shadowline worker``), not a test's.
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        lease_seconds: float = 30.0,
        threads: int = 0,
        monitor_drift: bool = True,
        freeze_after_load: bool = False,
    ) -> None:
        self.database = database
        self.settings = settings
        #: See :func:`core.inspection.freeze_long_lived` (``shadowline worker`` sets it; a test's process not).
        self.freeze_after_load = freeze_after_load
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.lease_seconds = lease_seconds
        self.threads = threads
        #: Phones inspected at once, each on one detector thread.
        self.streams = max(1, threads or os.cpu_count() or 1)
        self.batch_size = batch_size or BATCH_PER_STREAM * self.streams
        self._adapt_batch = batch_size is None
        #: Phones per second while inspecting (smoothed), from which the batch size follows.
        self.pace: float | None = None
        self.inspector = Inspector(database, settings, threads=1, admission_target_rate=settings.admission_target_rate)
        self.stats = WorkerStats(model_errors=self.inspector.model_errors)
        self._stop = threading.Event()
        self._last_beat = 0.0
        self.drift = DriftMonitor(database) if monitor_drift else None
        # One thread decodes the next phone's image (and measures it) while this one is inspected; one writes a
        # finished batch while the next is inspected. Both spend their time in OpenCV and SQLite,
        # which release the GIL, so they overlap onnxruntime's inference.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-decode")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="worker-write")
        # Beside this thread, streams - 1 more inspect phones of the batch at once (onnxruntime runs them in parallel).
        self._inspectors = ThreadPoolExecutor(max_workers=self.streams - 1, thread_name_prefix="worker-inspect") if self.streams > 1 else None
        #: Why the image store cannot be read, while it cannot (shown in the heartbeat).
        self.storage_problem: str | None = None
        self._backoff = RETRY_FIRST_SECONDS

    def model_status(self) -> str:
        status = self.inspector.model_status()
        return f"{self.storage_problem}; {status}" if self.storage_problem else status

    # -- one phone ----------------------------------------------------------------------------

    def _decode(self, item: ClaimedInspection) -> _Decoded | str | None:
        """The phone's decoded image with its input metrics, the decoder's reason when it is unreadable, or None when it is not to be read."""
        if item.attempts > MAX_ATTEMPTS:
            return None
        try:
            image = read_image(self.settings.image_file(item.image_path))
        except InvalidImageError as invalid:
            return str(invalid)
        try:
            scaled = scaled_for_metrics(image)
            return _Decoded(image, scaled, inspection.compute_input_metrics(image, scaled=scaled))
        except Exception as bug:  # the line keeps moving; the phone goes to a person, as for any failed inspection
            log.exception("measuring %s failed unexpectedly", item.serial)
            return f"inspection failed unexpectedly: {bug!r}"

    def _inspect(self, item: ClaimedInspection, line: LineConfig, repeats_serial: str | None = None, decoded: _Decoded | str | None = None) -> PhoneInspection:
        """Everything about one phone except the database write: the shared inspection path.

        Args:
            decoded: What :meth:`_decode` gave for this phone.
        """
        if item.attempts > MAX_ATTEMPTS:
            error = (
                f"workers died {item.attempts - 1} times while inspecting this phone (killed or crashed, not necessarily the image's fault); a person judges it"
            )
            return self.inspector.inspect_safely(None, serial=item.serial, line=line, error=error)
        if isinstance(decoded, str):
            return self.inspector.inspect_safely(None, serial=item.serial, line=line, error=decoded)
        if decoded is None:  # not decoded ahead: read it now
            return self._inspect(item, line, repeats_serial, self._decode(item))
        return self.inspector.inspect_safely(
            decoded.image, serial=item.serial, line=line, repeats_serial=repeats_serial, metrics=decoded.metrics, scaled=decoded.scaled
        )

    # -- the loop -----------------------------------------------------------------------------

    def _claim(self) -> list[ClaimedInspection]:
        with self.database.write() as session:
            claimed = claim_batch(session=session, worker_id=self.worker_id, limit=self.batch_size, lease_seconds=self.lease_seconds)
        self._backoff = RETRY_FIRST_SECONDS  # the database answered
        if not claimed:
            return claimed
        problem = store_problem(self.settings)
        if problem is not None:
            # Not one phone failed for it: they go back to the queue for a machine that can read them.
            with self.database.write() as session:
                release_claims(session=session, worker_id=self.worker_id, inspection_ids=[item.id for item in claimed])
            raise StorageUnavailableError(problem)
        self.storage_problem = None
        return claimed

    def _inspect_batch_paced(self, claimed: list[ClaimedInspection]) -> _InspectedBatch:
        """:meth:`_inspect_batch`, and the next batch sized to about :data:`BATCH_SECONDS` of work at this one's pace."""
        started = time.perf_counter()
        batch = self._inspect_batch(claimed)
        seconds = time.perf_counter() - started
        if self._adapt_batch and len(claimed) >= self.streams and seconds > 0:
            pace = len(claimed) / seconds
            self.pace = pace if self.pace is None else 0.5 * self.pace + 0.5 * pace
            wanted = round(self.pace * BATCH_SECONDS)
            self.batch_size = max(MIN_BATCH_PER_STREAM * self.streams, min(MAX_BATCH_PER_STREAM * self.streams, wanted))
        return batch

    def _inspect_batch(self, claimed: list[ClaimedInspection]) -> _InspectedBatch:
        """Inspect a claimed batch; the next phone's image is decoded in the reader thread meanwhile."""
        lines, repeats = self._read_lines(claimed)
        images = [self._reader.submit(self._decode, item) for item in claimed]

        def inspect(index: int) -> PhoneResult:
            item, line = claimed[index], lines[claimed[index].line_id]
            inspected = self._inspect(item, line, repeats.get(item.id), images[index].result())
            return PhoneResult(item.id, item.line_id, line.level, **inspected.as_result_fields(), active_model_id=line.active_model_id)

        if self._inspectors is None:
            return _InspectedBatch(lines, [inspect(index) for index in range(len(claimed))])
        # The streams take the batch's phones in order, this thread among them; the results keep the claim's order.
        results: list[PhoneResult | None] = [None] * len(claimed)
        taken = iter(range(len(claimed)))
        lock = threading.Lock()

        def stream() -> None:
            while True:
                with lock:
                    index = next(taken, None)
                if index is None:
                    return
                results[index] = inspect(index)

        others = [self._inspectors.submit(stream) for _ in range(self.streams - 1)]
        try:
            stream()
        finally:
            for other in others:
                other.result()
        inspected = [result for result in results if result is not None]
        assert len(inspected) == len(claimed), "every claimed phone is inspected"
        return _InspectedBatch(lines, inspected)

    def _write_and_account(self, batch: _InspectedBatch) -> None:
        """Write an inspected batch, then what follows a write: step-downs, counts, drift bookkeeping, heartbeat."""
        lines, results = batch.lines, batch.results
        stale, written, lost = self._write_results(results)
        if stale:
            log.info("%d phones inspected under a line setting that changed meanwhile are queued again", len(stale))
        step_down_lines_whose_model_failed(self.inspector, lines, results)
        for inspection_id in lost:
            log.warning("inspection %s is no longer held by %s: another worker reclaimed it", inspection_id, self.worker_id)
        self.stats.lost_leases += len(lost)
        self.stats.processed += len(written)
        written_ids = set(written)
        self.stats.failed_images += sum(1 for r in results if r.error is not None and r.inspection_id in written_ids)
        if self.drift is not None:
            written_results = [r for r in results if r.inspection_id in written_ids]
            urgent = note_written(self.drift, written_results, admission_run=self.settings.admission_run_alarm)
            # Drift checks are background work: done between phones, not in the middle of a busy queue,
            # unless one has waited DRIFT_CHECK_MAX_WAIT_SECONDS or its line has seen twice its phones.
            if urgent or self.drift.oldest_due_age() >= DRIFT_CHECK_MAX_WAIT_SECONDS:
                self.check_drift()
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self._ride_out(self.beat)

    def process_batch(self) -> int:
        """Claim, inspect and write one batch, all in this thread; returns how many phones were claimed."""
        claimed = self._claim()
        if claimed:
            self._write_and_account(self._inspect_batch_paced(claimed))
        return len(claimed)

    def _read_lines(self, claimed: list[ClaimedInspection]) -> tuple[dict[int, LineConfig], dict[int, str]]:
        """Every line's settings now, and which claimed phones repeat an earlier image byte for byte."""
        with self.database.read() as session:
            lines = {line.id: line for line in list_lines(session=session)}
            repeats = repeated_images(session=session, items=claimed)
        return lines, repeats

    def _write_results(self, results: list[PhoneResult]) -> tuple[set[int], list[int], list[int]]:
        """One transaction: requeue phones inspected under a changed line setting, write the others.

        Returns:
            The requeued (stale) ids, the written ids and the ids whose lease was lost.
        """
        with self.database.write() as session:
            stale = set(requeue_stale(session=session, worker_id=self.worker_id, results=results))
            written, lost = record_results(session=session, worker_id=self.worker_id, results=[r for r in results if r.inspection_id not in stale])
        return stale, written, lost

    def check_drift(self) -> None:
        """Run the drift checks that are due; a failing check is logged, never stops the line."""
        if self.drift is not None:
            run_due_drift_checks(self.drift, self.database)

    def beat(self, state: str = "running") -> None:
        self._last_beat = time.monotonic()
        with self.database.write() as session:
            heartbeats.beat(session=session, worker_id=self.worker_id, processed=self.stats.processed, state=state, model_status=self.model_status())

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, once: bool = False, until_empty: bool = False, poll_seconds: float = 0.5, max_seconds: float | None = None) -> WorkerStats:
        """Process phones until stopped.

        The database work of one batch overlaps the inference of the next: while batch N is
        written (and its drift bookkeeping done) in the writer thread, batch N+1, claimed just
        before, is inspected here. Claims and writes never run at once (SQLite has one writer),
        and a batch's write still checks, in its own transaction, its leases and that each
        line's level and model are the ones it was inspected with.

        Args:
            once: Process at most one batch.
            until_empty: Stop when the queue is empty.
            poll_seconds: Pause between rounds while the queue is empty.
            max_seconds: Stop after this long (a bound for tests and scripts).
        """
        started = time.monotonic()
        self._ride_out(self.beat)
        # The lines' models load before the first phone, so the heartbeat says whether they load
        # (a worker left with nothing to do, the line fed through `shadowline serve`, shows them loaded too).
        self._ride_out(self._load_models)
        try:
            while True:
                try:
                    self._pipeline(once=once, until_empty=until_empty, poll_seconds=poll_seconds, started=started, max_seconds=max_seconds)
                    break
                except StorageUnavailableError as error:
                    self.stats.storage_waits += 1
                    if self.stats.storage_waits == 1 or self.stats.storage_waits % 30 == 0:
                        log.error("%s; phones stay queued, retrying in %.0f s", error, RETRY_MAX_SECONDS)
                    self.storage_problem = str(error)
                    self._ride_out(self.beat)
                    self._stop.wait(RETRY_MAX_SECONDS if not once else 0)
                except Exception as error:
                    # The database restarting or the network dropping ends nothing: the round is
                    # retried after a back-off. Phones claimed in it are not lost: what was
                    # committed stays, and an unfinished phone's lease expires and is claimed again.
                    if not is_transient(error):
                        raise
                    self.stats.database_retries += 1
                    log.warning("database unavailable (%s); retrying in %.1f s", str(error).splitlines()[0], self._backoff)
                    self._stop.wait(self._backoff)
                    self._backoff = min(self._backoff * 2, RETRY_MAX_SECONDS)
                if once or self._stop.is_set() or self._time_up(started, max_seconds):
                    break
        finally:
            self._ride_out(lambda: self.beat(state="stopped"))
        return self.stats

    def _pipeline(self, *, once: bool, until_empty: bool, poll_seconds: float, started: float, max_seconds: float | None) -> None:
        """Claim, inspect and write batches until there is a reason to stop; errors propagate to :meth:`run`."""
        writing: Future[None] | None = None
        failing = True
        try:
            claimed = self._claim()
            while True:
                if not claimed:
                    if writing is not None:
                        writing.result()
                        writing = None
                        # That write may have queued phones again (inspected under a level or model
                        # that changed meanwhile): the queue is empty only if a claim after it finds nothing.
                        claimed = self._claim()
                        if claimed:
                            continue
                    self.check_drift()
                    if once or until_empty or self._stop.is_set() or self._time_up(started, max_seconds):
                        break
                    if time.monotonic() - self._last_beat > 2.0:
                        self._ride_out(self.beat)
                    self._stop.wait(poll_seconds)
                    if self._stop.is_set():
                        break
                    claimed = self._claim()
                    continue
                batch = self._inspect_batch_paced(claimed)  # overlaps the previous batch's write
                if writing is not None:
                    writing.result()  # its errors surface here, as they did inline
                last = once or self._stop.is_set() or self._time_up(started, max_seconds)
                claimed = [] if last else self._claim()  # before the write starts: no second writer waits
                writing = self._writer.submit(self._write_and_account, batch)
                if last:
                    writing.result()
                    writing = None
                    break
            failing = False
        finally:
            if writing is not None:
                try:
                    writing.result()
                except Exception:
                    if not failing:
                        raise
                    # Already failing: the first error is the one reported; this batch's phones
                    # were not written and their leases expire, so they are claimed again.
                    log.warning("a batch's write failed while the worker was already failing", exc_info=True)

    def _load_models(self) -> None:
        with self.database.read() as session:
            lines = list_lines(session=session)
        self.inspector.load_models(lines)
        if self.freeze_after_load:
            inspection.freeze_long_lived()
        self.beat()

    def _ride_out(self, write: Callable[[], None]) -> None:
        """A heartbeat that cannot be written while the database is away is skipped, not fatal."""
        try:
            write()
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("heartbeat not written, the database is unavailable: %s", str(error).splitlines()[0])

    @staticmethod
    def _time_up(started: float, max_seconds: float | None) -> bool:
        return max_seconds is not None and time.monotonic() - started > max_seconds

    def close(self) -> None:
        """Stop the reader and writer threads (after :meth:`run` has returned)."""
        self._reader.shutdown(wait=True)
        self._writer.shutdown(wait=True)
        if self._inspectors is not None:
            self._inspectors.shutdown(wait=True)

    def install_signal_handlers(self) -> None:
        """Stop after the current batch on SIGTERM or SIGINT."""

        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping after this batch", signum)
            self.stop()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)

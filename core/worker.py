"""The background worker: claims queued phones, inspects them, routes them, writes it all down.

Runs as its own process (``shadowline worker``). Each round it claims a small batch with a lease,
and for each phone: decodes the stored image, computes the input metrics, runs the line's active
(blue) model and, if there is one, its candidate (green) model, applies the routing policy, and
writes metrics, predictions, routing and (when the model decides) the final decision in one
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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from core.detector.adapter import Detector
from core.detector.card import ModelError
from core.drift.monitor import DriftMonitor
from core.image_metrics import InputMetrics, compute_input_metrics
from core.imaging import InvalidImageError, read_image
from core.ladder.actions import check_rollbacks, step_down
from core.routing import LEVEL_POLICIES, ModelAuthority, PhoneFacts, route
from core.settings import Settings
from core.vocabulary import AutomationLevel, Verdict
from db import audit, heartbeats
from db.engine import Database
from db.lines import LineConfig, list_lines
from db.pipeline import MAX_ATTEMPTS, ClaimedInspection, PhoneResult, PredictionRecord, claim_batch, record_results, requeue_stale
from db.registry import get_model

log = logging.getLogger("shadowline.worker")

#: Heartbeats are written at most this often while the worker is busy (and every 2 s when idle).
HEARTBEAT_SECONDS = 1.0
#: A due drift check waits for a pause in the queue at most this long.
DRIFT_CHECK_MAX_WAIT_SECONDS = 10.0
#: Seconds before a model that failed to load is tried again.
MODEL_RETRY_SECONDS = 30.0


@dataclass
class _ModelSlot:
    detector: Detector | None = None
    error: str | None = None
    failed_at: float = 0.0


@dataclass
class WorkerStats:
    processed: int = 0
    failed_images: int = 0
    lost_leases: int = 0
    model_errors: dict[str, str] = field(default_factory=dict)


class Worker:
    """One worker process's loop.

    Args:
        database: Where the queue is.
        settings: Data folder (images are stored relative to it).
        worker_id: A unique name; generated from host and pid when omitted.
        batch_size: Phones claimed per round.
        lease_seconds: How long a claim holds before another worker may take the phone.
        threads: CPU threads for the detector (0 = onnxruntime's default).
        monitor_drift: Check each line for drift every ``check_every`` phones (its drift settings).
    """

    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        worker_id: str | None = None,
        batch_size: int = 8,
        lease_seconds: float = 30.0,
        threads: int = 0,
        monitor_drift: bool = True,
    ) -> None:
        self.database = database
        self.settings = settings
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.threads = threads
        self.stats = WorkerStats()
        self._models: dict[int, _ModelSlot] = {}
        self._stop = threading.Event()
        self._last_beat = 0.0
        self.drift = DriftMonitor(database) if monitor_drift else None

    # -- models -------------------------------------------------------------------------------

    def _detector(self, model_id: int) -> Detector | None:
        """The loaded detector of a registered version, or None while it cannot be loaded."""
        slot = self._models.get(model_id)
        if slot and slot.detector:
            return slot.detector
        if slot and slot.error and time.monotonic() - slot.failed_at < MODEL_RETRY_SECONDS:
            return None
        with self.database.read() as session:
            model = get_model(session=session, model_id=model_id)
        try:
            if model is None:
                raise ModelError(f"model id {model_id} is not registered")
            detector = Detector(Path(model.path), expected_sha256=model.onnx_sha256, threads=self.threads)
        except ModelError as error:
            first_failure = slot is None or slot.error != str(error)
            self._models[model_id] = _ModelSlot(error=str(error), failed_at=time.monotonic())
            self.stats.model_errors[str(model_id)] = str(error)
            log.error("model %s unavailable, its lines go to people: %s", model_id, error)
            if first_failure:
                with self.database.write() as session:
                    audit.record(
                        session=session,
                        actor=audit.SYSTEM_ACTOR,
                        action="model.unavailable",
                        entity="model",
                        entity_id=model_id,
                        note=f"{error}. Phones of its lines are routed to people until it loads.",
                    )
            return None
        if slot and slot.error:
            with self.database.write() as session:
                audit.record(
                    session=session, actor=audit.SYSTEM_ACTOR, action="model.available", entity="model", entity_id=model_id, note="The model loads again."
                )
        self._models[model_id] = _ModelSlot(detector=detector)
        self.stats.model_errors.pop(str(model_id), None)
        log.info("loaded model %s (%s, %s)", detector.version, detector.info.backend, model.path if model else "")
        return detector

    def model_status(self) -> str:
        if self.stats.model_errors:
            return "; ".join(f"model {k}: {v}" for k, v in self.stats.model_errors.items())
        loaded = [s.detector.version for s in self._models.values() if s.detector]
        return "ok: " + ", ".join(loaded) if loaded else "no model loaded yet"

    # -- one phone ----------------------------------------------------------------------------

    def _predict(self, model_id: int | None, image, *, is_candidate: bool, threshold: float) -> PredictionRecord | None:  # noqa: ANN001
        if model_id is None:
            return None
        detector = self._detector(model_id)
        if detector is None:
            return None
        try:
            detections = detector.detect(image)
        except Exception as error:
            log.exception("model %s failed on a phone", model_id)
            self.stats.model_errors[str(model_id)] = f"inference failed: {error}"
            return None
        return PredictionRecord(
            model_version_id=model_id,
            is_candidate=is_candidate,
            boxes=detections.to_records(),
            max_confidence=detections.max_confidence,
            verdict=Verdict.REJECT if detections.max_confidence >= threshold else Verdict.PASS,
            latency_ms=detections.latency_ms,
        )

    def _inspect(self, item: ClaimedInspection, line: LineConfig) -> dict:
        """Everything about one phone except the database write."""
        error: str | None = None
        metrics: InputMetrics | None = None
        predictions: list[PredictionRecord] = []
        image = None
        if item.attempts > MAX_ATTEMPTS:
            error = f"gave up after {item.attempts - 1} attempts: the worker died while inspecting this phone each time"
        else:
            try:
                image = read_image(self.settings.data_dir / item.image_path)
            except InvalidImageError as invalid:
                error = str(invalid)
        if image is not None:
            metrics = compute_input_metrics(image)
            if LEVEL_POLICIES[line.level].runs_model:
                threshold = line.policy.decision_threshold
                active = self._predict(line.active_model_id, image, is_candidate=False, threshold=threshold)
                candidate = self._predict(line.candidate_model_id, image, is_candidate=True, threshold=threshold)
                predictions = [p for p in (active, candidate) if p is not None]
        active_prediction = next((p for p in predictions if not p.is_candidate), None)
        facts = PhoneFacts(serial=item.serial, image_ok=error is None, max_confidence=active_prediction.max_confidence if active_prediction else None)
        return {
            "routing": route(line.level, facts, line.policy),
            "metrics": metrics,
            "predictions": predictions,
            "routed_model_id": active_prediction.model_version_id if active_prediction else None,
            "error": error,
        }

    def _inspect_safely(self, item: ClaimedInspection, line: LineConfig) -> dict:
        """:meth:`_inspect`, but a bug on one phone sends that phone to a person instead of killing the worker."""
        try:
            return self._inspect(item, line)
        except Exception as error:  # the line must keep moving; the phone is not passed
            log.exception("inspection %s failed unexpectedly", item.id)
            return {
                "routing": route(line.level, PhoneFacts(serial=item.serial, image_ok=False), line.policy),
                "metrics": None,
                "predictions": [],
                "routed_model_id": None,
                "error": f"inspection failed unexpectedly: {error!r}",
            }

    # -- the loop -----------------------------------------------------------------------------

    def process_batch(self) -> int:
        """Claim and finish one batch; returns how many phones were claimed."""
        with self.database.write() as session:
            claimed = claim_batch(session=session, worker_id=self.worker_id, limit=self.batch_size, lease_seconds=self.lease_seconds)
        if not claimed:
            return 0
        with self.database.read() as session:
            lines = {line.id: line for line in list_lines(session=session)}
        results = [
            PhoneResult(
                item.id,
                item.line_id,
                lines[item.line_id].level,
                **self._inspect_safely(item, lines[item.line_id]),
                active_model_id=lines[item.line_id].active_model_id,
            )
            for item in claimed
        ]
        with self.database.write() as session:
            stale = set(requeue_stale(session=session, worker_id=self.worker_id, results=results))
            written, lost = record_results(session=session, worker_id=self.worker_id, results=[r for r in results if r.inspection_id not in stale])
        if stale:
            log.info("%d phones inspected under a line setting that changed meanwhile are queued again", len(stale))
        self._step_down_lines_whose_model_failed(lines, results)
        for inspection_id in lost:
            log.warning("inspection %s is no longer held by %s: another worker reclaimed it", inspection_id, self.worker_id)
        self.stats.lost_leases += len(lost)
        self.stats.processed += len(written)
        written_ids = set(written)
        self.stats.failed_images += sum(1 for r in results if r.error is not None and r.inspection_id in written_ids)
        if self.drift is not None:
            for line_id in {r.line_id for r in results if r.inspection_id in written_ids}:
                self.drift.note_processed(line_id, sum(1 for r in results if r.line_id == line_id and r.inspection_id in written_ids))
            # Drift checks are background work: done between phones, not in the middle of a busy queue,
            # unless one has been waiting DRIFT_CHECK_MAX_WAIT_SECONDS.
            if self.drift.oldest_due_age() >= DRIFT_CHECK_MAX_WAIT_SECONDS:
                self.check_drift()
        if time.monotonic() - self._last_beat >= HEARTBEAT_SECONDS:
            self.beat()
        return len(claimed)

    def _step_down_lines_whose_model_failed(self, lines: dict[int, LineConfig], results: list[PhoneResult]) -> None:
        """A line where the model decides, whose model gave no prediction, drops back to shadow by itself."""
        failed = {r.line_id for r in results if r.routing.rule == "model_unavailable"}
        for line_id in failed:
            line = lines[line_id]
            if LEVEL_POLICIES[line.level].authority is ModelAuthority.NONE:
                continue
            with self.database.write() as session:
                fresh = next((candidate for candidate in list_lines(session=session) if candidate.id == line_id), None)
                if fresh is not None:
                    reason = f"the model {fresh.active_model_version} failed: {self.model_status()}"
                    if step_down(session, fresh, to_level=AutomationLevel.SHADOW, reason=reason):
                        log.warning("line %s dropped back to shadow: %s", fresh.name, reason)

    def check_drift(self) -> None:
        """Run the drift checks that are due; a failing check is logged, never stops the line."""
        if self.drift is None:
            return
        try:
            if self.drift.check_due():
                for what in check_rollbacks(self.database):
                    log.warning("automatic rollback: %s", what)
        except Exception:
            log.exception("drift or rollback check failed; inspection goes on")

    def beat(self, state: str = "running") -> None:
        self._last_beat = time.monotonic()
        with self.database.write() as session:
            heartbeats.beat(session=session, worker_id=self.worker_id, processed=self.stats.processed, state=state, model_status=self.model_status())

    def stop(self) -> None:
        self._stop.set()

    def run(self, *, once: bool = False, until_empty: bool = False, poll_seconds: float = 0.5, max_seconds: float | None = None) -> WorkerStats:
        """Process phones until stopped.

        Args:
            once: Process at most one batch.
            until_empty: Stop when the queue is empty.
            poll_seconds: Pause between rounds while the queue is empty.
            max_seconds: Stop after this long (a bound for tests and scripts).
        """
        started = time.monotonic()
        self.beat()
        try:
            while not self._stop.is_set():
                claimed = self.process_batch()
                if claimed == 0:
                    self.check_drift()
                if once or (until_empty and claimed == 0):
                    break
                if max_seconds is not None and time.monotonic() - started > max_seconds:
                    break
                if claimed == 0:
                    if time.monotonic() - self._last_beat > 2.0:
                        self.beat()
                    self._stop.wait(poll_seconds)
        finally:
            self.beat(state="stopped")
        return self.stats

    def install_signal_handlers(self) -> None:
        """Stop after the current batch on SIGTERM or SIGINT."""

        def _handle(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping after this batch", signum)
            self.stop()

        signal.signal(signal.SIGTERM, _handle)
        signal.signal(signal.SIGINT, _handle)

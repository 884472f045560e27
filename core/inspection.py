"""The one inspection path: everything Shadowline decides about one phone, before it is written down.

Both the background worker (``shadowline worker``, phones queued as files) and the prediction
server (``shadowline serve``, phones posted by the line) call :class:`Inspector`. For one phone
it computes the input metrics, runs the line's active (blue) model and, if there is one, its
candidate (green), asks the admission check whether the active model may decide a phone like
this one, and applies the routing policy. Writing the result is the caller's unit of work
(:func:`db.pipeline.record_results`), so the worker and the server write it the same way; after
writing, both call the same upkeep (:func:`step_down_lines_whose_model_failed`,
:func:`note_written`, :func:`run_due_drift_checks`).

When in doubt a person judges: an unreadable image, a model that cannot be loaded or that
failed, and an image the model was not validated on all route to a person; nothing is passed
that nobody could see.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.admission import AdmissionError, AdmissionResult, Admitter, load_admitter
from core.detector.adapter import Detector
from core.detector.card import ModelError
from core.drift.monitor import DriftMonitor
from core.image_metrics import InputMetrics, compute_input_metrics, scaled_for_metrics
from core.ladder.actions import check_rollbacks, step_down
from core.routing import LEVEL_POLICIES, ModelAuthority, PhoneFacts, RoutingDecision, route
from core.settings import Settings
from core.vocabulary import AutomationLevel, Verdict
from db import audit
from db.engine import Database
from db.lines import LineConfig, list_lines, lock_line
from db.pipeline import PhoneResult, PredictionRecord
from db.registry import get_model, model_folder

log = logging.getLogger("shadowline.inspection")

#: Seconds before a model that failed to load is tried again.
MODEL_RETRY_SECONDS = 30.0


@dataclass(frozen=True)
class PhoneInspection:
    """What the inspection path found about one phone, ready for :class:`db.pipeline.PhoneResult`.

    Attributes:
        routing: Who judges the phone, and why.
        metrics: The image's input metrics (None when the image could not be read).
        predictions: The active and candidate models' outputs (those that ran).
        routed_model_id: The active model that routed the phone, when it gave a prediction.
        error: Why the phone failed (unreadable image, a bug), or None.
        admission: The admission check's answer for the active model (None when it did not run).
    """

    routing: RoutingDecision
    metrics: InputMetrics | None
    predictions: list[PredictionRecord]
    routed_model_id: int | None
    error: str | None = None
    admission: AdmissionResult | None = None

    def as_result_fields(self) -> dict:
        """The keyword arguments of :class:`db.pipeline.PhoneResult` this inspection fills."""
        return {
            "routing": self.routing,
            "metrics": self.metrics,
            "predictions": self.predictions,
            "routed_model_id": self.routed_model_id,
            "error": self.error,
            "admission": self.admission,
        }


@dataclass
class _ModelSlot:
    detector: Detector | None = None
    admitter: Admitter | None = None
    admission_error: str | None = None
    error: str | None = None
    failed_at: float = 0.0


@dataclass
class Inspector:
    """Loads model versions on first use and inspects phones with them.

    Thread-safe for loading (the server inspects from a thread pool); a model that cannot be
    loaded is retried every :data:`MODEL_RETRY_SECONDS` and its lines' phones go to people
    meanwhile (said once in the audit log).

    Args:
        database: Where model versions are registered.
        settings: The installation's folders.
        threads: CPU threads per detector (0 = onnxruntime's default).
        spin: The detector's idle threads spin-wait: right for one inference at a time (the
            worker), wrong for several at once (the service).
        narrow_when_busy: An inference that starts while another runs takes one thread, not
            ``threads`` (the service: see :class:`core.detector.onnx_backend.OnnxPredictor`).
    """

    database: Database
    settings: Settings
    threads: int = 0
    spin: bool = True
    narrow_when_busy: bool = False
    #: Share of normal phones the admission check sends to people (None: each version's own calibration).
    admission_target_rate: float | None = None
    model_errors: dict[str, str] = field(default_factory=dict)
    _models: dict[int, _ModelSlot] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- models -------------------------------------------------------------------------------

    def detector(self, model_id: int) -> Detector | None:
        """The loaded detector of a registered version, or None while it cannot be loaded."""
        slot = self._slot(model_id)
        return slot.detector if slot else None

    def admitter(self, model_id: int) -> tuple[Admitter | None, str | None]:
        """The version's admission check, or None and why it is missing."""
        slot = self._slot(model_id)
        if slot is None:
            return None, "the model is not loaded"
        return slot.admitter, slot.admission_error

    def _slot(self, model_id: int) -> _ModelSlot | None:
        slot = self._models.get(model_id)
        if slot and slot.detector:
            return slot
        if slot and slot.error and time.monotonic() - slot.failed_at < MODEL_RETRY_SECONDS:
            return None
        with self._lock:
            slot = self._models.get(model_id)
            if slot and slot.detector:
                return slot
            return self._load(model_id, slot)

    def _load(self, model_id: int, previous: _ModelSlot | None) -> _ModelSlot | None:
        with self.database.read() as session:
            model = get_model(session=session, model_id=model_id)
        try:
            if model is None:
                raise ModelError(f"model id {model_id} is not registered")
            detector = Detector(
                model_folder(model.path, self.settings.models_dir),
                expected_sha256=model.onnx_sha256,
                threads=self.threads,
                spin=self.spin,
                narrow_when_busy=self.narrow_when_busy,
            )
        except ModelError as error:
            first_failure = previous is None or previous.error != str(error)
            self._models[model_id] = _ModelSlot(error=str(error), failed_at=time.monotonic())
            self.model_errors[str(model_id)] = str(error)
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
        if previous and previous.error:
            with self.database.write() as session:
                audit.record(
                    session=session, actor=audit.SYSTEM_ACTOR, action="model.available", entity="model", entity_id=model_id, note="The model loads again."
                )
        admitter: Admitter | None = None
        admission_error: str | None = None
        try:
            admitter = load_admitter(detector, target_rate=self.admission_target_rate)
        except AdmissionError as error:
            admission_error = str(error)
            log.error("model %s has no usable admission check; the model decides nothing on its own: %s", model_id, error)
        slot = _ModelSlot(detector=detector, admitter=admitter, admission_error=admission_error)
        self._models[model_id] = slot
        self.model_errors.pop(str(model_id), None)
        log.info("loaded model %s (%s, %s)", detector.version, detector.info.backend, model.path)
        return slot

    def load_models(self, lines: Iterable[LineConfig]) -> None:
        """Load the active and candidate versions of every line whose level runs the model (ahead of the first phone)."""
        for line in lines:
            if LEVEL_POLICIES[line.level].runs_model:
                for model_id in (line.active_model_id, line.candidate_model_id):
                    if model_id is not None:
                        self.detector(model_id)

    def is_loaded(self, model_id: int) -> bool:
        """Whether the version is loaded now (loads nothing)."""
        slot = self._models.get(model_id)
        return bool(slot and slot.detector)

    def model_status(self) -> str:
        """One line for status and the heartbeat: the loaded versions, or what fails."""
        if self.model_errors:
            return "; ".join(f"model {k}: {v}" for k, v in self.model_errors.items())
        loaded = [s.detector.version for s in self._models.values() if s.detector]
        return "ok: " + ", ".join(loaded) if loaded else "ok: no model needed yet"

    # -- one phone ----------------------------------------------------------------------------

    def _predict(
        self, model_id: int | None, image: np.ndarray, *, is_candidate: bool, threshold: float, resized: np.ndarray | None = None
    ) -> tuple[PredictionRecord | None, np.ndarray | None]:
        """The model's prediction record and its pooled features (None, None when it did not run).

        Args:
            resized: The image as resized for its input metrics (the detector takes it rather than resizing again).
        """
        if model_id is None:
            return None, None
        slot = self._slot(model_id)
        if slot is None or slot.detector is None:
            return None, None
        try:
            detections = slot.detector.detect(image, resized=resized)
        except Exception as error:
            log.exception("model %s failed on a phone", model_id)
            self.model_errors[str(model_id)] = f"inference failed: {error}"
            return None, None
        record = PredictionRecord(
            model_version_id=model_id,
            is_candidate=is_candidate,
            boxes=detections.to_records(),
            max_confidence=detections.max_confidence,
            verdict=Verdict.REJECT if detections.max_confidence >= threshold else Verdict.PASS,
            latency_ms=detections.latency_ms,
        )
        return record, detections.features

    def inspect(
        self,
        image: np.ndarray | None,
        *,
        serial: str,
        line: LineConfig,
        error: str | None = None,
        repeats_serial: str | None = None,
        metrics: InputMetrics | None = None,
        scaled: np.ndarray | None = None,
    ) -> PhoneInspection:
        """Inspect one decoded phone image (or route a phone whose image failed, with ``error``).

        Args:
            repeats_serial: The serial of an earlier phone whose image this one repeats byte for
                byte (a frozen camera): the model may not decide it.
            metrics: The image's input metrics when already computed (the worker's reader thread does).
            scaled: The image as resized for those metrics (:func:`core.image_metrics.scaled_for_metrics`),
                when already made: the detector takes it rather than resizing the image again.
        """
        predictions: list[PredictionRecord] = []
        admission: AdmissionResult | None = None
        if image is not None and error is None:
            if metrics is None:
                scaled = scaled_for_metrics(image)
                metrics = compute_input_metrics(image, scaled=scaled)
            if LEVEL_POLICIES[line.level].runs_model:
                threshold = line.policy.decision_threshold
                active, features = self._predict(line.active_model_id, image, is_candidate=False, threshold=threshold, resized=scaled)
                candidate, _ = self._predict(line.candidate_model_id, image, is_candidate=True, threshold=threshold, resized=scaled)
                predictions = [p for p in (active, candidate) if p is not None]
                if active is not None and line.active_model_id is not None:
                    admission = self._admit(line.active_model_id, image, metrics, features)
                    if repeats_serial is not None:
                        admission = AdmissionResult.refused(
                            f"the very same image as phone {repeats_serial}: is the camera frozen?", check="repeat", novelty=admission.novelty
                        )
        active_prediction = next((p for p in predictions if not p.is_candidate), None)
        facts = PhoneFacts(
            serial=serial,
            image_ok=error is None and image is not None,
            max_confidence=active_prediction.max_confidence if active_prediction else None,
            admitted=admission.admitted if admission else None,
            admission_reason=admission.reason if admission else None,
        )
        return PhoneInspection(
            routing=route(line.level, facts, line.policy),
            metrics=metrics,
            predictions=predictions,
            routed_model_id=active_prediction.model_version_id if active_prediction else None,
            error=error,
            admission=admission,
        )

    def _admit(self, model_id: int, image: np.ndarray, metrics: InputMetrics, features: np.ndarray | None) -> AdmissionResult:
        admitter, why = self.admitter(model_id)
        if admitter is None:
            return AdmissionResult.refused(f"no admission check for this model version: {why}", check="missing")
        try:
            return admitter.check(image, metrics, features)
        except Exception as error:  # the check itself failing must not let the model decide
            log.exception("admission check failed on a phone")
            return AdmissionResult.refused(f"the admission check failed: {error!r}", check="error")

    def inspect_safely(
        self,
        image: np.ndarray | None,
        *,
        serial: str,
        line: LineConfig,
        error: str | None = None,
        repeats_serial: str | None = None,
        metrics: InputMetrics | None = None,
        scaled: np.ndarray | None = None,
    ) -> PhoneInspection:
        """:meth:`inspect`, but a bug on one phone sends that phone to a person instead of raising."""
        try:
            return self.inspect(image, serial=serial, line=line, error=error, repeats_serial=repeats_serial, metrics=metrics, scaled=scaled)
        except Exception as bug:  # the line must keep moving; the phone is not passed
            log.exception("inspection of %s failed unexpectedly", serial)
            return PhoneInspection(
                routing=route(line.level, PhoneFacts(serial=serial, image_ok=False), line.policy),
                metrics=None,
                predictions=[],
                routed_model_id=None,
                error=f"inspection failed unexpectedly: {bug!r}",
            )


# -- after the write: what the worker does after a batch and the server after a phone ---------


def step_down_lines_whose_model_failed(inspector: Inspector, lines: Mapping[int, LineConfig], results: Iterable[PhoneResult]) -> None:
    """A line where the model decides, whose model gave no prediction, drops back to shadow by itself."""
    failed = {r.line_id for r in results if r.routing.rule == "model_unavailable"}
    for line_id in failed:
        line = lines[line_id]
        if LEVEL_POLICIES[line.level].authority is ModelAuthority.NONE:
            continue
        with inspector.database.write() as session:
            lock_line(session=session, line_id=line_id)  # decide on the line as it is now (another worker may have moved it)
            fresh = next((candidate for candidate in list_lines(session=session) if candidate.id == line_id), None)
            if fresh is not None:
                reason = f"the model {fresh.active_model_version} failed: {inspector.model_status()}"
                if step_down(session, fresh, to_level=AutomationLevel.SHADOW, reason=reason):
                    log.warning("line %s dropped back to shadow: %s", fresh.name, reason)


def note_written(drift: DriftMonitor, written: Sequence[PhoneResult], *, admission_run: int) -> bool:
    """After phones were written: alarm at once on a run of refused phones, and count the phones toward drift checks.

    Args:
        written: The phones actually written (not those queued again or lost).
        admission_run: This many refused phones in a row raise a severe alarm (``Settings.admission_run_alarm``).

    Returns:
        True when a line's drift check has waited for twice its phones (it should not wait for a quiet moment).
    """
    for line_id in {r.line_id for r in written if r.admission is not None and not r.admission.admitted}:
        try:
            outcome = drift.check_admission_run(line_id, run=admission_run)
        except Exception:
            log.exception("admission run check failed; inspection goes on")
            continue
        if outcome:
            log.warning("line %s: %s", line_id, outcome)
    return drift.note_processed({r.line_id for r in written})


def run_due_drift_checks(drift: DriftMonitor, database: Database) -> None:
    """Run the drift checks that are due, then the automatic rollbacks; a failing check is logged, never stops the line."""
    try:
        if drift.check_due():
            for what in check_rollbacks(database):
                log.warning("automatic rollback: %s", what)
    except Exception:
        log.exception("drift or rollback check failed; inspection goes on")


def freeze_long_lived() -> None:
    """Move every object alive now out of the garbage collector's sight, in a process that runs until stopped.

    Called once the models are loaded (the worker, the inspection service). Everything alive then
    (the libraries, the models, SQLAlchemy's and FastAPI's tables) lives as long as the process, yet
    every full collection walked it with every thread stopped: 90-100 ms at a time on the 2-core
    machine, measured in the service at 40 phones/s (``gc.callbacks``), several whole answers. After
    the freeze a full collection took about 3 ms; the service's slowest answer in 40 s fell from
    134-161 to 60 ms. Objects made later are collected as before. Not for a test's process, whose
    garbage of earlier tests would stay for good.
    """
    gc.collect()
    gc.freeze()

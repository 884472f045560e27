"""The inspection service's domain: one posted phone in, one answer for the gate out, in time.

:class:`InspectionService` is what ``shadowline serve`` runs (the HTTP layer in ``app.py`` only
parses, authenticates and serialises). A posted phone is stored and inserted already claimed by
the service, inspected on the same path as the worker's (:class:`core.inspection.Inspector`,
admission check included), and written with :func:`db.pipeline.record_results` while the claim
is held, in one transaction that also records the gate's answer. After the write the service does
what the worker does after a batch (:mod:`core.inspection`'s upkeep): a run of phones the
admission check refused raises its alarm, a line whose model failed steps down, and the phone
counts toward the line's drift check. This upkeep runs after the answer, on one thread of its own
that takes what piled up within a quarter of a second as one batch, so the gate never waits for it. Nothing is lost
if the process dies between the answer and the upkeep: every step is recomputed from the database
(the refusals in a row, the phones since the line's last drift check), and the service catches up
on every line when it starts; a model that failed fails the next phone too.

Drift checks: the service schedules the checks of the phones it writes itself (``shadowline
serve`` runs the due ones every few seconds, off the request path). It cannot leave them to the
worker: the phone counts live in the database, but a worker's monitor learns that a check is due
only from its own batches, so a line fed only through the service would never be checked. A line
fed both by files (worker) and by the station (service) may be checked by both around the same
count.

The answer has a budget (per line, 300 ms by default). Each phone is one :class:`_Job` running
in a thread; the request waits for it until the budget is spent. If it has not answered by then,
the request answers the line's fail-safe (``to_person`` or ``reject``, never ``pass``) and the job
is told so: it still inspects and stores the phone, but writes it routed to a person under the
fail-safe's rule, so a late model answer can never become a model decision the line did not act
on. The switch is one state change under a lock, made before the job's writing transaction
decides what to write; a job already writing is waited for (it holds the write lock; its commit
takes milliseconds). A job given the fail-safe before it even got a thread, while newer phones
wait behind it (an overload), stores the phone for a person without running the model: otherwise
every later phone would wait behind the late ones and get the fail-safe too, long after the
overload ended. So does a job that starts, with newer phones waiting, when less of its budget is
left than an inspection takes now (the median of the last phones'): its answer would come too late
to count, so the line gets the fail-safe at once and the cores go to the next phone. Without this,
a service a little over its capacity inspected every late phone anyway, fell further behind, and
answered nearly every phone with the fail-safe at the end of its budget.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import os
import queue
import socket
import statistics
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.orm import Session

from core.drift.monitor import DriftMonitor
from core.imaging import InvalidImageError, decode_image_bytes
from core.ingest import NOT_STORED_PREFIX, StorageError, store_image_bytes
from core.inspection import Inspector, freeze_long_lived, note_written, run_due_drift_checks, step_down_lines_whose_model_failed
from core.routing import LEVEL_POLICIES, Decider, RoutingDecision, failsafe_in_words
from core.server.backlog import Backlog, Journal, UnrecordedPhone
from core.settings import Settings
from core.vocabulary import FailsafeReason, GateAction
from db import gate, heartbeats
from db.api_keys import KeyInfo, authenticate
from db.engine import Database, is_transient
from db.lines import LineConfig, find_line, list_lines
from db.pipeline import ClaimedInspection, PhoneResult, queue_depth, record_results, repeated_images

log = logging.getLogger("shadowline.server")

#: The claim a posted phone is inserted with: far beyond any budget, so the worker takes it over
#: only if this service died with the phone unfinished.
LEASE_SECONDS = 120.0
#: How often a retry of a serial answered by another process looks for that answer.
REPLAY_POLL_SECONDS = 0.02
#: A phone inspected under a line setting that changed meanwhile is inspected again, at most this often.
MAX_REINSPECTIONS = 3

#: The folder in the data folder where phones answered while the database was away wait to be written.
BACKLOG_FOLDER = "service-backlog"
#: The upkeep takes the phones written within this long of the first waiting one as one batch: its
#: reads (the line's drift counts, its run of refused phones) cost the same for one phone or fifty, and
#: nothing in it is urgent to the tenth of a second (the gate was answered before).
UPKEEP_GATHER_SECONDS = 0.25
#: The share of a line's budget the service keeps for the answer to leave the box: it decides by the rest
#: (270 ms of 300). Under overload the event loop itself runs late: with the decision at the full budget,
#: a fresh-eyes run at 54-57 phones/s got answers up to 89 ms past it.
ANSWER_MARGIN_SHARE = 0.1
#: Refused posts are written to the audit log at most this often (see :meth:`InspectionService.write_refused_posts`).
REFUSED_WRITE_SECONDS = 60.0
#: The phones whose inspection times say how long the next one will take (:meth:`InspectionService.cannot_finish_in_time`).
INSPECTION_TIMES_KEPT = 25
#: A policy rule that means the answer could not be judged: the line's fail-safe applies.
_FAILSAFE_RULES = {"image_failed": FailsafeReason.IMAGE_UNREADABLE, "model_unavailable": FailsafeReason.MODEL_UNAVAILABLE}
_DECIDED_BY_PERSON = "person"


class UnknownLineError(LookupError):
    """No line of that name."""


class SerialConflictError(ValueError):
    """A serial the line already has, posted with another image: another phone under the same serial, not a retry (409)."""

    @classmethod
    def of(cls, serial: str, line: str, what: str) -> SerialConflictError:
        return cls(
            f"serial {serial!r} on {line} {what}: a retry must send the same image, and another phone (or one come round again) needs a serial of its own"
        )


class AccessDeniedError(PermissionError):
    """A missing, unknown or revoked key (401), or a key of another line (403)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Answer:
    """What the service tells the gate about one phone.

    Attributes:
        inspection_id: The phone's inspection; None only when the database was too busy to record
            it within the budget (it is recorded afterwards; look it up by serial).
        action: ``pass``, ``reject`` or ``to_person``.
        decided_by: ``model``, or ``person`` when a person will judge (the final verdict pending).
        rule: The routing policy's rule, or ``failsafe_<reason>``.
        model_version: The version whose prediction the answer rests on (the line's active, blue,
            version); None when no model judged the phone.
        reason: Why, in words (the routing's reason): e.g. why the admission check refused the image.
        latency_ms: From the phone's arrival to this answer.
        failsafe: None, or why the answer is the line's fail-safe.
        replayed: True when this serial had been posted before (a station's retry).
    """

    inspection_id: int | None
    line: str
    serial: str
    action: GateAction
    decided_by: str
    level: str
    rule: str
    model_version: str | None
    latency_ms: float
    failsafe: FailsafeReason | None
    reason: str | None = None
    replayed: bool = False

    @property
    def pending(self) -> bool:
        return self.decided_by == _DECIDED_BY_PERSON


class _State(StrEnum):
    PENDING = "pending"
    FAILSAFE = "failsafe"  # the line was answered with the fail-safe; the job writes the phone for a person
    COMMITTING = "committing"  # the job is writing its judged answer; wait for it
    DONE = "done"


class _Stage(StrEnum):
    QUEUING = "queuing"  # waiting for an inspection thread
    STORING = "storing"  # has one: the phone's row is being inserted
    INSPECTING = "inspecting"
    WRITING = "writing"
    REPLAYING = "replaying"


@dataclass(frozen=True)
class _Findings:
    """One inspection's outcome, before it is written."""

    line: LineConfig
    result: PhoneResult
    model_version: str | None


def failsafe_routing(line: LineConfig, reason: FailsafeReason) -> RoutingDecision:
    """Where a phone the gate handled with its fail-safe goes: to a person, under the fail-safe's rule."""
    return RoutingDecision(
        decider=Decider.HUMAN,
        model_verdict=None,
        show_model_boxes=LEVEL_POLICIES[line.level].human_sees_boxes,
        audit=False,
        rule=f"failsafe_{reason.value}",
        reason=f"The gate acted on the line's fail-safe ({line.failsafe_action}): {failsafe_in_words(reason.value)}; a person judges the phone.",
    )


def answer_for(line: LineConfig, routing: RoutingDecision, *, model_version: str | None) -> tuple[GateAction, str, FailsafeReason | None]:
    """The gate's action for a routing decision: the model's verdict, a person, or the fail-safe."""
    if routing.decider is Decider.MODEL:
        assert routing.model_verdict is not None, "a model decision carries its verdict"
        return GateAction(routing.model_verdict.value), "model", None
    reason = _FAILSAFE_RULES.get(routing.rule)
    if reason is not None:
        return GateAction(line.failsafe_action), _DECIDED_BY_PERSON, reason
    return GateAction.TO_PERSON, _DECIDED_BY_PERSON, None


class _Job:
    """One posted phone on its way through the service, shared by every request for its serial."""

    def __init__(self, service: InspectionService, *, line: LineConfig, serial: str, image: bytes, suffix: str, meta: dict[str, object]) -> None:
        self.service = service
        self.line = line
        self.serial = serial
        self.image = image
        self.suffix = suffix
        self.meta = meta
        self.started = time.perf_counter()
        self.lock = threading.Lock()
        self.state = _State.PENDING
        self.stage = _Stage.QUEUING
        self.stage_since = self.started
        self.failsafe: FailsafeReason | None = None
        self.failsafe_latency_ms: float | None = None
        self.inspection_id: int | None = None
        self.image_path: str | None = None
        self.image_sha256: str | None = None
        self.answer: Answer | None = None
        self.replayed = False
        #: Other phones were waiting for a thread when this one got one (see :meth:`InspectionService.job_started`).
        self.shed = False
        #: When the job got its thread.
        self.running_since = self.started

    # -- called by requests (event loop) ------------------------------------------------------

    def give_failsafe(self, latency_ms: float, *, reason: FailsafeReason | None = None) -> bool:
        """Answer the line with its fail-safe unless the job is already writing or done; returns whether it did.

        ``reason``: why, when the job itself decides (otherwise told from the stage the budget ran out in).
        """
        with self.lock:
            if self.state is _State.FAILSAFE:
                return True
            if self.state is not _State.PENDING or self.stage is _Stage.REPLAYING:
                return False
            self.state = _State.FAILSAFE
            # Most of the budget spent waiting for the database (its write lock) is the database's doing;
            # a phone that never got an inspection thread is an overload, whatever the database does.
            waited = time.perf_counter() - self.stage_since
            in_database = self.stage in (_Stage.STORING, _Stage.WRITING) and waited * 1000 >= max(50.0, self.line.answer_budget_ms / 2)
            if reason is not None:
                self.failsafe = reason
            elif self.stage is _Stage.QUEUING:
                self.failsafe = FailsafeReason.OVERLOADED
            else:
                self.failsafe = FailsafeReason.DATABASE_BUSY if in_database else FailsafeReason.BUDGET_EXCEEDED
            self.failsafe_latency_ms = latency_ms
            return True

    def failsafe_answer(self) -> Answer:
        assert self.failsafe is not None
        line = self.line
        return Answer(
            inspection_id=self.inspection_id,
            line=line.name,
            serial=self.serial,
            action=GateAction(line.failsafe_action),
            decided_by=_DECIDED_BY_PERSON,
            level=line.level.value,
            rule=f"failsafe_{self.failsafe.value}",
            model_version=None,
            latency_ms=self.failsafe_latency_ms or 0.0,
            failsafe=self.failsafe,
            reason=failsafe_routing(line, self.failsafe).reason,
            replayed=self.replayed,
        )

    # -- the job's thread ---------------------------------------------------------------------

    def run(self) -> Answer:
        self.shed = self.service.job_started()
        self.running_since = time.perf_counter()
        with self.lock:
            self.stage, self.stage_since = _Stage.STORING, time.perf_counter()
        try:
            return self._run()
        except SerialConflictError:
            # Not this phone's inspection: nothing was written, the request is refused (409). Unless the gate
            # acted on the fail-safe before the conflict was found: then a phone is on its way to a person
            # under a serial that names another phone, and people must hear of it.
            if self.state is _State.FAILSAFE:
                self.service.note_unrecorded_conflict(self)
            raise
        except Exception as error:
            log.exception("phone %s on %s: inspection failed; the fail-safe applies", self.serial, self.line.name)
            if not is_transient(error):
                return self._fall_back(FailsafeReason.INTERNAL_ERROR)
            # The database does not answer (a restart, a blip): the fail-safe at once, and the phone is
            # written once it answers again (core/server/backlog.py), unless it was written already.
            answer = self._fall_back(FailsafeReason.DATABASE_BUSY)
            self.service.keep_unrecorded(self)
            return answer

    def _elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    def _run(self) -> Answer:
        service = self.service
        # No look-up of the serial first: the image is stored by its hash (a retry's same bytes are the same
        # file) and the insert finds a serial the line already has, in the one write the phone needs anyway.
        try:
            relative, digest = store_image_bytes(service.settings, self.line.name, self.image, self.suffix)
        except StorageError as error:
            # A full or read-only store: a retry of a phone already written still gets its answer.
            with service.database.read() as session:
                earlier = gate.posted_phone(session=session, line_id=self.line.id, serial=self.serial)
            if earlier is not None:
                self._check_same_image(earlier, hashlib.sha256(self.image).hexdigest())
                return self._replay(earlier.inspection_id)
            return self._without_image(error)
        self.image_path, self.image_sha256 = relative, digest
        with service.database.write() as session:
            opened = service.open_phone(session, self.line, self.serial, relative, digest, self.meta)
            repeats_serial = service.repeated_image(session, opened.inspection_id, self.serial, self.line, relative, digest) if opened.created else None
        if not opened.created:
            self._check_same_image(opened, digest)
            return self._replay(opened.inspection_id)
        self.inspection_id = opened.inspection_id
        with self.lock:
            overtaken = self.state is _State.FAILSAFE and self.shed
        if overtaken:
            # The gate already acted on the fail-safe while this phone waited, and newer phones wait behind it:
            # stored and sent to a person without the model, so an overload clears instead of delaying every later phone.
            return self._fall_back(self.failsafe or FailsafeReason.BUDGET_EXCEEDED)
        # Newer phones wait, and what is left of this one's budget is less than an inspection takes now: the
        # model's answer would come too late to count. The fail-safe at once, and the cores for the next phone.
        if self.shed and service.cannot_finish_in_time(self) and self.give_failsafe(self._elapsed_ms(), reason=FailsafeReason.OVERLOADED):
            return self._fall_back(FailsafeReason.OVERLOADED)
        for _ in range(MAX_REINSPECTIONS + 1):
            with self.lock:
                self.stage, self.stage_since = _Stage.INSPECTING, time.perf_counter()
            assert self.inspection_id is not None and self.image_path is not None
            findings = service.inspect(self.inspection_id, self.serial, self.image, self.image_path, self.line, repeats_serial=repeats_serial)
            with self.lock:
                self.stage, self.stage_since = _Stage.WRITING, time.perf_counter()
            answer = self._write(findings)
            if answer is not None:
                service.inspected_in(time.perf_counter() - self.running_since)
                return answer
            self.line = service.line_config(self.line.name)  # a setting changed meanwhile: inspect again under the new one
        return self._fall_back(FailsafeReason.BUDGET_EXCEEDED)

    def _without_image(self, error: StorageError) -> Answer:
        """The image store cannot take the image: the phone is recorded without it, routed to a person, under the fail-safe.

        The phone exists on the line whatever the disk says: its row (serial, station, the image's
        hash) and the gate's answer are written, so the hold station, the review queue and the Live
        line know of it, and a retry of the serial gets the same answer.
        """
        log.error("phone %s on %s: %s; recorded without its image, the line's fail-safe applies", self.serial, self.line.name, error)
        service = self.service
        digest = hashlib.sha256(self.image).hexdigest()
        with service.database.write() as session:
            opened = service.open_phone(session, self.line, self.serial, f"{NOT_STORED_PREFIX}{digest}{self.suffix}", digest, self.meta)
        if not opened.created:
            self._check_same_image(opened, digest)
            return self._replay(opened.inspection_id)
        self.inspection_id = opened.inspection_id
        return self._fall_back(FailsafeReason.IMAGE_NOT_STORED)

    def _check_same_image(self, earlier: gate.OpenedPhone, digest: str) -> None:
        """A serial posted before is a retry only with the same image; another image is another phone (refused, 409)."""
        if earlier.image_sha256 is not None and earlier.image_sha256 != digest:
            raise SerialConflictError.of(self.serial, self.line.name, f"was posted before with another image (inspection {earlier.inspection_id})")

    def _replay(self, inspection_id: int) -> Answer:
        """A serial posted before: the answer it got, waiting (up to the budget) if it is still being inspected elsewhere."""
        with self.lock:
            self.stage = _Stage.REPLAYING
            self.replayed = True
            self.inspection_id = inspection_id
        deadline = self.started + self.line.answer_budget_ms / 1000
        service = self.service
        while True:
            stored = service.stored_answer(inspection_id)
            if stored is not None and stored.action is not None:
                return service.answer_from_stored(stored, latency_ms=self._elapsed_ms())
            if time.perf_counter() >= deadline:
                break
            time.sleep(REPLAY_POLL_SECONDS)
        # Unanswered still (the process inspecting it died, or is slow): give the fail-safe, if nobody answers first.
        with service.database.write() as session:
            gate.record_answer(
                session=session,
                inspection_id=inspection_id,
                action=self.line.failsafe_action,
                decided_by=_DECIDED_BY_PERSON,
                level=self.line.level.value,
                rule=f"failsafe_{FailsafeReason.BUDGET_EXCEEDED.value}",
                model_version_id=None,
                failsafe=FailsafeReason.BUDGET_EXCEEDED.value,
                latency_ms=self._elapsed_ms(),
            )
        stored = service.stored_answer(inspection_id)
        assert stored is not None and stored.action is not None
        return service.answer_from_stored(stored, latency_ms=self._elapsed_ms())

    def _write(self, findings: _Findings) -> Answer | None:
        """Write the phone and the gate's answer in one transaction; None when the line changed meanwhile."""
        service = self.service
        assert self.inspection_id is not None
        with service.database.write() as session:
            fresh = find_line(session=session, line_id=self.line.id)
            if fresh is None or _policy_key(fresh) != _policy_key(findings.line):
                return None
            given_action, given_failsafe = gate.answer_state(session=session, inspection_id=self.inspection_id)
            with self.lock:
                if self.state is _State.PENDING and given_action is None:
                    self.state = _State.COMMITTING
                elif self.state is _State.PENDING:  # answered by another process meanwhile: keep to it
                    self.state = _State.FAILSAFE
                    self.failsafe = FailsafeReason(given_failsafe) if given_failsafe else FailsafeReason.BUDGET_EXCEEDED
                    self.failsafe_latency_ms = self._elapsed_ms()
                failsafe = self.failsafe if self.state is _State.FAILSAFE else None
            result = findings.result
            if failsafe is not None:
                result = replace(result, routing=failsafe_routing(findings.line, failsafe))
                action, decided_by, model_version = GateAction(findings.line.failsafe_action), _DECIDED_BY_PERSON, None
                latency_ms = self.failsafe_latency_ms or self._elapsed_ms()
                model_version_id = None
            else:
                action, decided_by, failsafe = answer_for(findings.line, result.routing, model_version=findings.model_version)
                model_version = findings.model_version if result.routed_model_id is not None else None
                model_version_id = result.routed_model_id
                latency_ms = self._elapsed_ms()
            _, lost = record_results(session=session, worker_id=service.holder_id, results=[result])
            if lost:
                raise RuntimeError(f"inspection {self.inspection_id}: the service's claim was lost (held longer than {LEASE_SECONDS:.0f} s)")
            gate.record_answer(
                session=session,
                inspection_id=self.inspection_id,
                action=action.value,
                decided_by=decided_by,
                level=findings.line.level.value,
                rule=result.routing.rule,
                model_version_id=model_version_id,
                failsafe=failsafe.value if failsafe else None,
                latency_ms=latency_ms,
            )
        answer = Answer(
            inspection_id=self.inspection_id,
            line=findings.line.name,
            serial=self.serial,
            action=action,
            decided_by=decided_by,
            level=findings.line.level.value,
            rule=result.routing.rule,
            model_version=model_version,
            latency_ms=latency_ms,
            failsafe=failsafe,
            reason=result.routing.reason,
        )
        with self.lock:
            self.state = _State.FAILSAFE if failsafe is not None and self.state is _State.FAILSAFE else _State.DONE
            self.answer = answer
        service.after_written(findings.line, findings.result)  # what the inspection found, whatever the gate was told
        return answer

    def _fall_back(self, reason: FailsafeReason) -> Answer:
        """Something failed: the line gets its fail-safe, and the phone (if it was recorded) goes to a person."""
        with self.lock:
            if self.state is not _State.FAILSAFE:
                self.state = _State.FAILSAFE
                self.failsafe = reason
                self.failsafe_latency_ms = self._elapsed_ms()
        if self.inspection_id is not None:
            try:
                self.service.write_failsafe(self.inspection_id, self.line, self.failsafe or reason, latency_ms=self.failsafe_latency_ms or 0.0)
            except Exception:
                log.exception("inspection %s: could not record the fail-safe; the worker takes the phone over when its claim expires", self.inspection_id)
        return self.failsafe_answer()


def answer_deadline(line: LineConfig) -> float:
    """Seconds from a phone's arrival by which the service decides its answer: the line's budget less
    :data:`ANSWER_MARGIN_SHARE`, left for the answer to leave the box while the cores are busy."""
    return line.answer_budget_ms / 1000 * (1 - ANSWER_MARGIN_SHARE)


def _policy_key(line: LineConfig) -> tuple[object, ...]:
    return (line.level, line.active_model_id, line.candidate_model_id, line.policy)


class InspectionService:
    """The inspection service: authenticates stations, answers the gate, keeps the metrics.

    Args:
        database: The plant's database.
        settings: Data folder (images are stored under it).
        inspector: The one inspection path shared with the worker.
        threads: Jobs inspected at once (the detector itself uses every core it is given).
        monitor_drift: Raise the admission run alarm and schedule drift checks for the phones
            written here (see the module's docstring); :meth:`background_checks` runs the due ones.
        freeze_after_load: Once the models are loaded, move every object alive then out of the
            garbage collector's sight (``gc.freeze``), as a process that serves until it stops
            should (``shadowline serve``; not a test's process): see :func:`core.inspection.freeze_long_lived`.
    """

    def __init__(
        self, database: Database, settings: Settings, inspector: Inspector, *, threads: int = 4, monitor_drift: bool = True, freeze_after_load: bool = False
    ) -> None:
        from core.server.metrics import ServiceMetrics

        self.database = database
        self.settings = settings
        self.inspector = inspector
        self._freeze_after_load = freeze_after_load
        self.holder_id = f"service-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.heartbeat_id = f"{heartbeats.SERVER_PREFIX}{socket.gethostname()}-{os.getpid()}"[:64]
        #: Phones answered since start (the heartbeat's count).
        self.answered = 0
        self._threads = threads
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="inspect")
        #: Jobs submitted and not yet started: a fail-safe'd job that starts while others wait skips the model.
        self._waiting = 0
        self._waiting_lock = threading.Lock()
        #: Refused posts by (line, code) not yet written (see :meth:`write_refused_posts`), and when they last were.
        self._refused: dict[tuple[str, str], int] = {}
        self._refused_lock = threading.Lock()
        self._refused_written_at = -REFUSED_WRITE_SECONDS
        #: How long the last phones' inspection and write took, in seconds (see :meth:`cannot_finish_in_time`).
        self._inspection_s: deque[float] = deque(maxlen=INSPECTION_TIMES_KEPT)
        self._in_flight: dict[tuple[int, str], tuple[_Job, asyncio.Future[Answer]]] = {}
        self.metrics = ServiceMetrics(self._queue_depths, self._model_labels)
        self._ready = threading.Event()
        self._load_error: str | None = None
        self.drift = DriftMonitor(database) if monitor_drift else None
        #: The upkeep after a write and the background checks share the monitor's bookkeeping: one at a time.
        self._upkeep_lock = threading.Lock()
        #: Written phones waiting for their upkeep (None: catch up on every line); see :meth:`_upkeep_loop`.
        self._upkeep_queue: queue.Queue[tuple[LineConfig, PhoneResult] | None] = queue.Queue()
        self._upkeep_pending = 0
        self._upkeep_idle = threading.Condition()
        self._closing = threading.Event()
        self._upkeep_queue.put(None)
        self._upkeep_pending = 1
        self._upkeep_thread = threading.Thread(target=self._upkeep_loop, name="upkeep", daemon=True)
        self._upkeep_thread.start()
        #: Phones answered while the database did not answer, written once it does.
        self.unrecorded = Backlog(self._record_unrecorded, Journal(settings.data_dir / BACKLOG_FOLDER))
        #: Whether the server is shutting down (``shadowline serve`` sets it): long-polls answer at once then.
        self.is_stopping: Callable[[], bool] = lambda: False
        #: The last successful authorization of each (key's sha256, line): see :meth:`authorize`.
        self._authorized: dict[tuple[str, str | None], tuple[KeyInfo, LineConfig | None]] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def start_loading(self) -> None:
        """Load every line's models in the background; :meth:`readiness` says when done."""
        threading.Thread(target=self._load_models, name="load-models", daemon=True).start()

    def _load_models(self) -> None:
        try:
            with self.database.read() as session:
                lines = list_lines(session=session)
            self.inspector.load_models(lines)
            self._load_error = None
        except Exception as error:
            log.exception("loading the models failed")
            self._load_error = str(error)
        finally:
            if self._freeze_after_load:
                freeze_long_lived()
            self._ready.set()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        """Ready = the models are loaded and the database answers."""
        checks: dict[str, object] = {}
        try:
            with self.database.read() as session:
                session.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as error:
            checks["database"] = f"unreachable: {error}"
        if not self._ready.is_set():
            checks["models"] = "loading"
        else:
            problems = [f"model {k}: {v}" for k, v in dict(self.inspector.model_errors).items()]  # a copy: jobs may change it
            checks["models"] = "ok" if not problems and self._load_error is None else (self._load_error or "; ".join(problems))
        return all(value == "ok" for value in checks.values()), checks

    def beat(self, state: str = "running") -> None:
        """Write this server's heartbeat (its readiness in words), so the app and ``status`` see it answering.

        A database that cannot take the beat raises; the caller rides it out.
        """
        ready, checks = self.readiness()
        words = "ready" if ready else "not ready: " + "; ".join(f"{k} {v}" for k, v in checks.items() if v != "ok")
        with self.database.write() as session:
            heartbeats.beat(session=session, worker_id=self.heartbeat_id, processed=self.answered, state=state, model_status=words)

    def background_checks(self) -> None:
        """Drift checks and automatic rollbacks that are due, as the worker runs them between phones."""
        if self.drift is None:
            return
        with self._upkeep_lock:
            run_due_drift_checks(self.drift, self.database)

    def inspected_in(self, seconds: float) -> None:
        """A phone took this long on its thread (stored, inspected, written): what the next are expected to take."""
        self._inspection_s.append(seconds)

    def _phone_seconds(self) -> float | None:
        """How long a phone takes on its thread now: the median of the last :data:`INSPECTION_TIMES_KEPT`
        (one stalled phone does not make the next ones look hopeless); None before the first phone."""
        recent = list(self._inspection_s)
        return statistics.median(recent) if recent else None

    def cannot_finish_in_time(self, job: _Job) -> bool:
        """Whether what is left of the job's answer time (:func:`answer_deadline`) is shorter than a phone takes now."""
        each = self._phone_seconds()
        return each is not None and job.started + answer_deadline(job.line) - time.perf_counter() < each

    def expected_answer_seconds(self) -> float | None:
        """When a phone posted now would be answered, if phones already wait for a thread: from how many
        wait and how long one takes now (the phones on the threads count as just started, so the
        estimate errs late). None when none waits, or before the first phone."""
        with self._waiting_lock:
            queued = self._waiting
        each = self._phone_seconds() if queued else None  # on every post: the median only when phones wait
        if each is None:
            return None
        return (queued // self._threads + 1) * each + each

    def job_started(self) -> bool:
        """A job got a thread; returns whether other jobs still wait for one (a backlog)."""
        with self._waiting_lock:
            self._waiting -= 1
            return self._waiting > 0

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
        try:
            self.write_refused_posts(now=math.inf)  # whatever was counted since the last write
        except Exception:
            log.exception("the refused posts counted lately could not be written")
        self.unrecorded.close()
        self.wait_for_upkeep(timeout=30)
        self._closing.set()
        self._upkeep_thread.join(timeout=5)

    def wait_for_upkeep(self, timeout: float | None = None) -> bool:
        """Until the upkeep of every phone written so far is done; returns False on timeout."""
        with self._upkeep_idle:
            return self._upkeep_idle.wait_for(lambda: self._upkeep_pending == 0, timeout=timeout)

    # -- reads --------------------------------------------------------------------------------

    def line_config(self, name: str) -> LineConfig:
        with self.database.read() as session:
            line = find_line(session=session, name=name)
        if line is None:
            raise UnknownLineError(f"no line named {name!r}")
        return line

    def authorize(self, key: str | None, line_name: str | None) -> tuple[KeyInfo, LineConfig | None]:
        """The key's info and the line it may act on (one read).

        While the database does not answer, a key this process let in before gets the same answer
        as then, with the line as it was then: its phones get the line's fail-safe (never a pass)
        and are written once the database answers (:meth:`keep_unrecorded`), instead of the camera
        station getting no answer at all. A key never seen gets the database's error (503).
        """
        if not key:
            raise AccessDeniedError("missing API key: send 'Authorization: Bearer KEY' (an admin makes one with `shadowline keys add`)", status=401)
        remembered = (hashlib.sha256(key.encode()).hexdigest(), line_name)
        try:
            found = self._authorize(key, line_name)
        except Exception as error:
            if is_transient(error) and remembered in self._authorized:
                return self._authorized[remembered]
            raise
        self._authorized[remembered] = found
        return found

    def _authorize(self, key: str, line_name: str | None) -> tuple[KeyInfo, LineConfig | None]:
        with self.database.read() as session:
            info = authenticate(session=session, key=key)
            if info is None:
                raise AccessDeniedError("unknown or revoked API key", status=401)
            if line_name is None:
                return info, None
            line = find_line(session=session, name=line_name)
        if line is None:
            raise UnknownLineError(f"no line named {line_name!r}")
        if line.id != info.line_id:
            raise AccessDeniedError(f"this key ({info.name}) is for line {info.line}, not {line_name}", status=403)
        return info, line

    def stored_answer(self, inspection_id: int) -> gate.StoredAnswer | None:
        with self.database.read() as session:
            return gate.get_answer(session=session, inspection_id=inspection_id)

    def find_by_serial(self, line_id: int, serial: str) -> gate.StoredAnswer | None:
        with self.database.read() as session:
            return gate.find_answer(session=session, line_id=line_id, serial=serial)

    def answer_from_stored(self, stored: gate.StoredAnswer, *, latency_ms: float) -> Answer:
        assert stored.action is not None
        return Answer(
            inspection_id=stored.inspection_id,
            line=stored.line,
            serial=stored.serial,
            action=GateAction(stored.action),
            decided_by=stored.decided_by or _DECIDED_BY_PERSON,
            level=stored.level or "",
            rule=stored.rule or "",
            model_version=stored.model_version,
            latency_ms=latency_ms,
            failsafe=FailsafeReason(stored.failsafe) if stored.failsafe else None,
            reason=stored.reason,
            replayed=True,
        )

    def decisions_after(self, line_id: int, after: gate.Position | None, limit: int) -> list[gate.FinalDecisionEvent]:
        with self.database.read() as session:
            return gate.final_decisions_after(session=session, line_id=line_id, after=after, limit=limit)

    def latest_cursor(self, line_id: int) -> gate.Position | None:
        with self.database.read() as session:
            return gate.latest_decision_cursor(session=session, line_id=line_id)

    def _queue_depths(self) -> dict[str, int]:
        try:
            with self.database.read() as session:
                return {line.name: queue_depth(session=session, line_id=line.id) for line in list_lines(session=session)}
        except Exception:
            log.exception("queue depth unavailable")
            return {}

    def _model_labels(self) -> list[dict[str, str]]:
        try:
            with self.database.read() as session:
                lines = list_lines(session=session)
        except Exception:
            return []
        labels = []
        for line in lines:
            for slot, model_id, version in (
                ("blue", line.active_model_id, line.active_model_version),
                ("green", line.candidate_model_id, line.candidate_model_version),
            ):
                if model_id is not None:
                    loaded = self.inspector.is_loaded(model_id)
                    labels.append({"line": line.name, "slot": slot, "version": version or "", "loaded": str(loaded).lower()})
        return labels

    # -- the inspection -----------------------------------------------------------------------

    def repeated_image(self, session: Session, inspection_id: int, serial: str, line: LineConfig, image_path: str, image_sha256: str) -> str | None:
        """The serial of an earlier phone on the line with this very image (a frozen camera), looked up as the worker does."""
        item = ClaimedInspection(inspection_id, serial, line.id, image_path, attempts=1, image_sha256=image_sha256)
        return repeated_images(session=session, items=[item]).get(inspection_id)

    def inspect(self, inspection_id: int, serial: str, image: bytes, image_path: str, line: LineConfig, *, repeats_serial: str | None) -> _Findings:
        """Run the shared inspection path on one posted phone (in a job's thread).

        The image is decoded from the posted bytes (the same decoder as the worker's file reads).
        ``repeats_serial`` names an earlier phone of another serial on the line with this very image
        (:meth:`repeated_image`): the model may not decide it.
        """
        try:
            decoded = decode_image_bytes(image, source=image_path)
        except InvalidImageError as invalid:
            inspection = self.inspector.inspect_safely(None, serial=serial, line=line, error=str(invalid))
        else:
            inspection = self.inspector.inspect_safely(decoded, serial=serial, line=line, repeats_serial=repeats_serial)
        result = PhoneResult(inspection_id, line.id, line.level, **inspection.as_result_fields(), active_model_id=line.active_model_id)
        return _Findings(line, result, line.active_model_version)

    def after_written(self, line: LineConfig, result: PhoneResult) -> None:
        """Queue the upkeep of a written phone (see :meth:`_upkeep_loop`); the gate's answer does not wait for it."""
        with self._upkeep_idle:
            self._upkeep_pending += 1
        self._upkeep_queue.put((line, result))

    def _upkeep_loop(self) -> None:
        """What the worker does after writing a batch, for the phones written here since the last round.

        A line whose model failed steps down, a run of refused phones raises its alarm, and the
        phones count toward the drift check (run by :meth:`background_checks`, so the urgency
        :func:`note_written` returns is not needed here). Every step reads the database, so a round
        done late, or after a restart (the first round catches up on every line), finds the same.
        """
        while not self._closing.is_set():
            try:
                first = self._upkeep_queue.get(timeout=0.2)
            except queue.Empty:
                continue
            self._closing.wait(UPKEEP_GATHER_SECONDS)
            batch = [first]
            while True:
                try:
                    batch.append(self._upkeep_queue.get_nowait())
                except queue.Empty:
                    break
            started = time.perf_counter()
            written = [item for item in batch if item is not None]
            try:
                self._upkeep(written, catch_up=len(written) < len(batch))
                self.metrics.upkeep.observe(time.perf_counter() - started)
                self.metrics.upkeep_phones.inc(len(written))
            except Exception:  # the phones are written and the gate answered: the answers stand
                log.exception("the upkeep after %d written phones failed; the next round or check tries again", len(batch))
            finally:
                with self._upkeep_idle:
                    self._upkeep_pending -= len(batch)
                    self._upkeep_idle.notify_all()

    def _upkeep(self, written: list[tuple[LineConfig, PhoneResult]], *, catch_up: bool) -> None:
        lines = {line.id: line for line, _ in written}
        results = [result for _, result in written]
        with self._upkeep_lock:
            step_down_lines_whose_model_failed(self.inspector, lines, results)
            if self.drift is None:
                return
            if catch_up:
                with self.database.read() as session:
                    line_ids = {line.id for line in list_lines(session=session)}
                for line_id in line_ids:
                    self.drift.check_admission_run(line_id, run=self.settings.admission_run_alarm)
                self.drift.note_processed(line_ids)
            note_written(self.drift, results, admission_run=self.settings.admission_run_alarm)

    def write_failsafe(self, inspection_id: int, line: LineConfig, reason: FailsafeReason, *, latency_ms: float) -> None:
        """Record a phone the line handled with its fail-safe, with no findings, for a person to judge."""
        with self.database.write() as session:
            self._record_failsafe(session, inspection_id, line, reason, latency_ms=latency_ms, unless_lost=False)

    def _record_failsafe(self, session: Session, inspection_id: int, line: LineConfig, reason: FailsafeReason, *, latency_ms: float, unless_lost: bool) -> None:
        """The phone routed to a person under the fail-safe's rule, and the gate's fail-safe answer, in the caller's transaction.

        With ``unless_lost``, nothing is answered when another process holds the phone now (a worker
        after the lease): it judges and answers.
        """
        result = PhoneResult(inspection_id, line.id, line.level, failsafe_routing(line, reason), None, [], None, None, active_model_id=line.active_model_id)
        _, lost = record_results(session=session, worker_id=self.holder_id, results=[result])
        if lost and unless_lost:
            return
        gate.record_answer(
            session=session,
            inspection_id=inspection_id,
            action=line.failsafe_action,
            decided_by=_DECIDED_BY_PERSON,
            level=line.level.value,
            rule=f"failsafe_{reason.value}",
            model_version_id=None,
            failsafe=reason.value,
            latency_ms=latency_ms,
        )

    def open_phone(self, session: Session, line: LineConfig, serial: str, image_path: str, image_sha256: str, meta: dict[str, object]) -> gate.OpenedPhone:
        """Insert a posted phone claimed by this service (or find the line's phone of that serial)."""
        return gate.open_posted_phone(
            session=session,
            line_id=line.id,
            serial=serial,
            image_path=image_path,
            image_sha256=image_sha256,
            captured_at=meta.get("captured_at"),  # type: ignore[arg-type]
            station=meta.get("station"),  # type: ignore[arg-type]
            api_key_id=meta.get("api_key_id"),  # type: ignore[arg-type]
            holder=self.holder_id,
            lease_seconds=LEASE_SECONDS,
        )

    def note_refused_post(self, line_name: str, code: str) -> None:
        """A phone's post was refused with a 4xx (bad key, bad form, not an image...): nothing of it is recorded.

        Counted here and written by :meth:`write_refused_posts` (about once a minute, the first at once),
        so the Live line can say that a station's phones go to the hold station unrecorded, and why.
        """
        with self._refused_lock:
            self._refused[(line_name, code)] = self._refused.get((line_name, code), 0) + 1

    def write_refused_posts(self, *, now: float | None = None) -> None:
        """Write the refused posts counted since the last write, per line, to the audit log (see :func:`db.gate.record_refused_posts`).

        At most once every :data:`REFUSED_WRITE_SECONDS` (the first after a quiet spell at once): a
        station refused all day leaves a line a minute, not one per phone. What the database does not
        take stays counted for the next try.
        """
        now = time.monotonic() if now is None else now
        with self._refused_lock:
            if not self._refused or now - self._refused_written_at < REFUSED_WRITE_SECONDS:
                return
            counted, self._refused = self._refused, {}
            since, self._refused_written_at = self._refused_written_at, now
        by_line: dict[str, dict[str, int]] = {}
        for (line_name, code), count in counted.items():
            by_line.setdefault(line_name, {})[code] = count
        try:
            with self.database.write() as session:
                for line_name, counts in by_line.items():
                    line = find_line(session=session, name=line_name)
                    gate.record_refused_posts(session=session, line_id=line.id if line else None, line_name=line_name, counts=counts)
        except Exception:
            with self._refused_lock:  # kept for the next try
                for key, count in counted.items():
                    self._refused[key] = self._refused.get(key, 0) + count
                self._refused_written_at = since
            raise

    def note_unrecorded_conflict(self, job: _Job) -> None:
        """A phone the gate sent to its fail-safe turned out to reuse a serial the line has, with another image.

        It cannot be recorded under that serial (it names the other phone), so it is not in the Review
        queue: the audit log says so, with its image, for the hold station and the quality engineer.
        """
        action = job.line.failsafe_action
        note = (
            f"A phone posted as {job.serial!r} on {job.line.name} with another image than the phone already under that serial got the "
            f"line's fail-safe ({action}) before the conflict was found. It is not recorded (the serial is the other phone's) and is not "
            f"in the Review queue: find it at the hold station, give it a serial of its own and post it again. "
            + (f"Its image: {job.image_path}." if job.image_path else "Its image could not be stored either.")
        )
        log.error("%s", note)
        try:
            with self.database.write() as session:
                gate.record_serial_conflict(
                    session=session,
                    line_id=job.line.id,
                    serial=job.serial,
                    station=job.meta.get("station"),  # type: ignore[arg-type]
                    image_path=job.image_path,
                    image_sha256=job.image_sha256,
                    action=action,
                    note=note,
                )
        except Exception:
            log.exception("phone %s on %s: the serial conflict could not be written to the audit log", job.serial, job.line.name)

    def keep_unrecorded(self, job: _Job) -> None:
        """A phone answered with the fail-safe while the database did not answer: its image stored now, the phone written later."""
        if job.image_path is None or job.image_sha256 is None:
            try:
                job.image_path, job.image_sha256 = store_image_bytes(self.settings, job.line.name, job.image, job.suffix)
            except Exception:
                log.exception("phone %s on %s: its image could not be stored either; answered with the fail-safe, not kept", job.serial, job.line.name)
                return
        reason = job.failsafe or FailsafeReason.DATABASE_BUSY
        self.unrecorded.add(UnrecordedPhone.of(job.line, job.serial, job.image_path, job.image_sha256, job.meta, reason, job.failsafe_latency_ms or 0.0))

    def _record_unrecorded(self, phone: UnrecordedPhone) -> None:
        """Write a kept phone routed to a person, with the fail-safe the gate got, in one transaction (see core/server/backlog.py)."""
        with self.database.write() as session:
            current = find_line(session=session, line_id=phone.line_id)
            if current is None:
                log.error("phone %s: its line %s no longer exists; not written", phone.serial, phone.line_name)
                return
            # The line as the gate acted under it (its settings may have moved since, or the phone was kept by an earlier run).
            line = replace(current, level=phone.level, active_model_id=phone.active_model_id, failsafe_action=phone.failsafe_action)
            opened = self.open_phone(session, line, phone.serial, phone.image_path, phone.image_sha256, phone.meta)
            if gate.answer_state(session=session, inspection_id=opened.inspection_id)[0] is not None:
                return  # written and answered before the database stopped answering, or since by a retry
            self._record_failsafe(session, opened.inspection_id, line, phone.reason, latency_ms=phone.latency_ms, unless_lost=True)

    async def post(
        self, *, line: LineConfig, key: KeyInfo, serial: str, image: bytes, suffix: str, captured_at: datetime | None, station: str | None
    ) -> Answer:
        """Inspect one posted phone and answer within the line's budget (the fail-safe otherwise)."""
        arrived = time.perf_counter()
        loop = asyncio.get_running_loop()
        slot = (line.id, serial)
        shared = self._in_flight.get(slot)
        if shared is None:
            expected = self.expected_answer_seconds()
            job = _Job(self, line=line, serial=serial, image=image, suffix=suffix, meta={"captured_at": captured_at, "station": station, "api_key_id": key.id})
            with self._waiting_lock:
                self._waiting += 1
            future = loop.run_in_executor(self._pool, job.run)
            self._in_flight[slot] = (job, future)
            self.metrics.in_flight.inc()

            def _finished(_: object) -> None:
                self._in_flight.pop(slot, None)
                self.metrics.in_flight.dec()

            future.add_done_callback(_finished)
            if expected is not None and expected > answer_deadline(line):
                # Too many phones ahead to answer this one in time: the fail-safe now, not at the deadline. The
                # phone is still stored (and, with nobody behind it when its turn comes, inspected) for a person.
                latency_ms = (time.perf_counter() - arrived) * 1000
                if job.give_failsafe(latency_ms, reason=FailsafeReason.OVERLOADED):
                    answer = job.failsafe_answer()
                    self._count(answer, latency_ms)
                    return answer
        else:
            job, future = shared
            if job.image != image:
                raise SerialConflictError.of(serial, line.name, "is being inspected with another image")
        remaining = job.started + answer_deadline(line) - time.perf_counter()
        try:
            answer = await asyncio.wait_for(asyncio.shield(future), timeout=max(0.0, remaining))
        except TimeoutError:
            latency_ms = (time.perf_counter() - arrived) * 1000
            answer = job.failsafe_answer() if job.give_failsafe(latency_ms) else await asyncio.shield(future)
        latency_ms = (time.perf_counter() - arrived) * 1000
        if answer.replayed or shared is not None:  # a retry: how long this request took
            answer = replace(answer, latency_ms=latency_ms, replayed=True)
        # A first answer keeps the time recorded with it, so GET tells the same figure; the histogram
        # has the whole request, hand-off to the event loop included.
        self._count(answer, latency_ms)
        return answer

    def _count(self, answer: Answer, latency_ms: float) -> None:
        self.answered += 1
        self.metrics.latency.labels(answer.line, answer.model_version or "none").observe(latency_ms / 1000)
        self.metrics.actions.labels(answer.line, answer.action.value, answer.decided_by).inc()
        if answer.failsafe is not None:
            self.metrics.failsafes.labels(answer.line, answer.failsafe.value).inc()

"""The drift monitor: judges a line's rolling window against its reference, raises alarms, steps down.

The worker calls :meth:`DriftMonitor.note_processed` after each batch and :meth:`check_due`
after it; a line is checked each time ``check_every`` new phones were inspected (counted in the
database, so restarts do not reset the count), and :meth:`check_admission_run` raises a severe
alarm at once on a run of phones the admission check refused. A check is
one transaction: the verdicts are stored (for the charts over time), alarms are raised once and
updated afterwards, and a severe alarm on the model's inputs, outputs or human agreement moves
the line down to ``step_down_to`` (shadow by default) so that people judge every phone again.
Moving back up is a person's decision through the normal approval, never the monitor's.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from core.drift.metrics import METRIC_BY_NAME, DriftConfig, MetricVerdict, Sample, Severity, Verdict, judge
from core.drift.reference import REFERENCE_FILE, Reference, ReferenceError, load_model_reference, stratify
from core.settings import get_settings
from db import audit
from db import drift as drift_db
from db.engine import Database
from db.lines import LineConfig, list_lines, lock_line, set_level
from db.models import DriftAlarm, ModelVersion, utcnow
from db.registry import model_folder

log = logging.getLogger("shadowline.drift")

#: The metric under which the admission check's alarms are kept (window rate and runs in a row).
ADMISSION_METRIC = "inadmissible_rate"


@dataclass(frozen=True)
class DriftReport:
    """One line's window judged against its reference."""

    line: str
    line_id: int
    level: str
    model_version: str | None
    model_version_id: int | None
    reference: str
    reference_source: str
    reference_error: str | None
    window: drift_db.WindowInfo
    verdicts: list[MetricVerdict]

    def verdict(self, metric: str) -> MetricVerdict:
        return next(v for v in self.verdicts if v.metric == metric)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["window"] = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self.window).items()}
        return data


@dataclass
class CheckOutcome:
    """What a check did."""

    report: DriftReport
    check_id: int
    raised: list[str] = field(default_factory=list)
    escalated: list[str] = field(default_factory=list)
    cleared: list[str] = field(default_factory=list)
    stepped_down: tuple[str, str] | None = None


def _store_raised(session: Session, line: LineConfig, alarm: DriftAlarm, alarms: dict[str, DriftAlarm], *, note: str) -> None:
    """Store a newly raised (or re-raised) alarm, keep it in ``alarms`` and audit it."""
    session.add(alarm)
    session.flush()
    alarms[alarm.metric] = alarm
    drift_db.file_alarm(session=session, alarm=alarm, now=alarm.last_seen_at)
    audit.record(
        session=session,
        actor=audit.SYSTEM_ACTOR,
        action="drift.alarm_raised",
        entity="drift_alarm",
        entity_id=alarm.id,
        after={"line": line.name, "metric": alarm.metric, "severity": alarm.severity, "statistic": alarm.statistic, "score": alarm.score},
        note=f"{METRIC_BY_NAME[alarm.metric].label}: {note}",
    )


class DriftMonitor:
    """Checks lines for drift; keeps references loaded between checks."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._references: dict[tuple[Any, ...], tuple[Reference | None, str | None]] = {}
        self._due_since: dict[int, float] = {}

    # -- references ---------------------------------------------------------------------------

    def reference(self, session: Session, line: LineConfig, config: DriftConfig) -> tuple[Reference | None, str | None]:
        """The line's reference for its active model, or None and why there is none."""
        model_id = line.active_model_id
        choice = drift_db.reference_choice(session=session, line_id=line.id, model_version_id=model_id)
        if choice is not None and choice.source == "production":
            key: tuple[Any, ...] = ("production", choice.id)
            if key not in self._references:
                assert choice.period_start is not None and choice.period_end is not None
                sample, info = drift_db.period_sample(
                    session=session, line_id=line.id, model_version_id=model_id, start=choice.period_start, end=choice.period_end
                )
                description = (
                    f"production of {line.name} from {choice.period_start:%Y-%m-%d %H:%M} to {choice.period_end:%Y-%m-%d %H:%M} UTC "
                    f"({info.phones} phones), accepted by {choice.accepted_by}"
                )
                self._references[key] = (Reference(source="production", description=description, sample=sample), None)
            return self._references[key]
        if model_id is None:
            return None, "the line has no active model"
        model = session.get(ModelVersion, model_id)
        if model is None:
            return None, f"model id {model_id} is not registered"
        folder = model_folder(model.path, get_settings().models_dir)
        stored = folder / REFERENCE_FILE
        # Keyed by the file's mtime too, so a recomputed reference is picked up without a restart.
        key = ("model", model.path, config.reference_defect_rate, stored.stat().st_mtime_ns if stored.exists() else 0)
        if key not in self._references:
            try:
                loaded = load_model_reference(folder)
                self._references[key] = (stratify(loaded, config.reference_defect_rate), None)
            except ReferenceError as error:
                self._references[key] = (None, str(error))
        return self._references[key]

    # -- judging ------------------------------------------------------------------------------

    def _evaluate(self, session: Session, line: LineConfig, config: DriftConfig, now: datetime) -> DriftReport:
        return self._evaluate_window(session, line, config, now)[0]

    def _evaluate_window(self, session: Session, line: LineConfig, config: DriftConfig, now: datetime) -> tuple[DriftReport, Sample]:
        reference, error = self.reference(session, line, config)
        window, info = drift_db.window_sample(session=session, line_id=line.id, model_version_id=line.active_model_id, config=config, now=now)
        verdicts = judge(reference.sample if reference else Sample(), window, config)
        if reference is None:
            verdicts = [v if v.verdict != Verdict.INCONCLUSIVE or v.kind == "software" else replace(v, reason=f"no reference: {error}") for v in verdicts]
        report = DriftReport(
            line=line.name,
            line_id=line.id,
            level=line.level.value,
            model_version=line.active_model_version,
            model_version_id=line.active_model_id,
            reference=reference.description if reference else "",
            reference_source=reference.source if reference else "none",
            reference_error=error,
            window=info,
            verdicts=verdicts,
        )
        return report, window

    def evaluate_with_window(self, line_name: str, *, config: DriftConfig | None = None, now: datetime | None = None) -> tuple[DriftReport, Sample]:
        """:meth:`evaluate`, and the window's values as well (the Drift page draws them without reading them again)."""
        from db.lines import get_line

        with self.database.read() as session:
            line = get_line(session=session, name=line_name)
            return self._evaluate_window(session, line, config or drift_db.get_config(session=session, line_id=line.id), now or utcnow())

    def evaluate(self, line_name: str, *, config: DriftConfig | None = None, now: datetime | None = None) -> DriftReport:
        """Judge a line's current window without recording anything (``shadowline drift``, the Drift page)."""
        from db.lines import get_line

        with self.database.read() as session:
            line = get_line(session=session, name=line_name)
            return self._evaluate(session, line, config or drift_db.get_config(session=session, line_id=line.id), now or utcnow())

    # -- checking -----------------------------------------------------------------------------

    def check(self, line_id: int, *, now: datetime | None = None) -> CheckOutcome:
        """Judge a line's window now (see :meth:`check_if_due`), store the verdicts, raise or update alarms, step down."""
        outcome = self.check_if_due(line_id, now=now, only_if_due=False)
        assert outcome is not None
        return outcome

    def check_if_due(self, line_id: int, *, now: datetime | None = None, only_if_due: bool = True) -> CheckOutcome | None:
        """Judge a line's window, store the verdicts, raise or update alarms and step down on a severe one.

        One check of a line at a time, on any number of workers: the line's row is locked first
        (:func:`db.lines.lock_line`), so an overlapping check waits and then sees the alarms and
        level the first one wrote (no second alarm, no second step-down). With ``only_if_due``
        (the worker's schedule) a check that finds the line checked meanwhile (fewer than
        ``check_every`` phones since, counted in the database) does nothing and returns None.
        """
        now = now or utcnow()
        with self.database.write() as session:
            lock_line(session=session, line_id=line_id)
            config = drift_db.get_config(session=session, line_id=line_id)
            if only_if_due and drift_db.phones_since_last_check(session=session, line_id=line_id) < config.check_every:
                return None
            line = next(line for line in list_lines(session=session) if line.id == line_id)
            report = self._evaluate(session, line, config, now)
            previous = drift_db.recent_verdicts(session=session, line_id=line.id, model_version_id=line.active_model_id, checks=config.consecutive - 1)
            check_id = drift_db.record_check(
                session=session,
                line_id=line.id,
                model_version_id=line.active_model_id,
                info=report.window,
                reference=report.reference,
                verdicts=report.verdicts,
                now=now,
            )
            outcome = CheckOutcome(report=report, check_id=check_id)
            alarms = drift_db.current_alarm_rows(session=session, line_id=line.id)
            for verdict in report.verdicts:
                self._update_alarm(session, line, verdict, alarms, previous, config, check_id, now, outcome)
            outcome.stepped_down = self._step_down_if_needed(session, line, alarms, config)
            drift_db.sync_incidents(session=session, line_id=line.id, now=now)
        for metric in outcome.raised + outcome.escalated:
            log.warning("line %s: drift alarm on %s (%s)", line.name, metric, report.verdict(metric).reason)
        if outcome.stepped_down:
            log.warning("line %s stepped down from %s to %s", line.name, *outcome.stepped_down)
        return outcome

    def _update_alarm(
        self,
        session: Session,
        line: LineConfig,
        verdict: MetricVerdict,
        alarms: dict[str, DriftAlarm],
        previous: list[dict[str, str]],
        config: DriftConfig,
        check_id: int,
        now: datetime,
        outcome: CheckOutcome,
    ) -> None:
        alarm = alarms.get(verdict.metric)
        if verdict.verdict == Verdict.DRIFT:
            sustained = len(previous) == config.consecutive - 1 and all(p.get(verdict.metric) == Verdict.DRIFT for p in previous)
            if alarm is None:
                if not sustained:
                    return
                alarm = DriftAlarm(
                    line_id=line.id,
                    model_version_id=line.active_model_id,
                    metric=verdict.metric,
                    kind=verdict.kind,
                    severity=verdict.severity or Severity.WARNING.value,
                    statistic=verdict.statistic,
                    score=verdict.score,
                    threshold=verdict.threshold,
                    psi=verdict.psi,
                    reason=verdict.reason,
                    raised_at=now,
                    last_seen_at=now,
                    check_id=check_id,
                    reference_value=verdict.reference_value,
                    current_value=verdict.current_value,
                )
                _store_raised(session, line, alarm, alarms, note=verdict.reason)
                outcome.raised.append(verdict.metric)
                return
            alarm.last_seen_at = now
            alarm.cleared_at = None
            alarm.score, alarm.threshold, alarm.psi, alarm.statistic = verdict.score, verdict.threshold, verdict.psi, verdict.statistic
            alarm.reference_value, alarm.current_value = verdict.reference_value, verdict.current_value
            if verdict.severity == Severity.SEVERE and alarm.severity != Severity.SEVERE and sustained:
                before = {"severity": alarm.severity, "acknowledged_by": alarm.acknowledged_by}
                alarm.severity = Severity.SEVERE.value
                alarm.reason = verdict.reason
                # A worse alarm must be seen again: an acknowledgement of the warning does not cover it.
                alarm.acknowledged_at = alarm.acknowledged_by = alarm.acknowledgement_note = None
                outcome.escalated.append(verdict.metric)
                audit.record(
                    session=session,
                    actor=audit.SYSTEM_ACTOR,
                    action="drift.alarm_escalated",
                    entity="drift_alarm",
                    entity_id=alarm.id,
                    before=before,
                    after={"severity": Severity.SEVERE.value},
                    note=f"{METRIC_BY_NAME[verdict.metric].label}: {verdict.reason}",
                )
                drift_db.file_alarm(session=session, alarm=alarm, now=now)
        elif verdict.verdict == Verdict.OK and alarm is not None and alarm.cleared_at is None:
            alarm.cleared_at = now
            outcome.cleared.append(verdict.metric)
            audit.record(
                session=session,
                actor=audit.SYSTEM_ACTOR,
                action="drift.alarm_cleared",
                entity="drift_alarm",
                entity_id=alarm.id,
                note=f"{METRIC_BY_NAME[verdict.metric].label} is back within its threshold: {verdict.reason}. The alarm stays until acknowledged.",
            )

    def _step_down_if_needed(self, session: Session, line: LineConfig, alarms: dict[str, DriftAlarm], config: DriftConfig) -> tuple[str, str] | None:
        """Move the line down to ``step_down_to`` on an open severe alarm; returns (from, to) when it moved."""
        severe = [a for a in alarms.values() if a.severity == Severity.SEVERE.value and a.cleared_at is None and METRIC_BY_NAME[a.metric].steps_down]
        target = config.step_down_to
        if not severe or line.level.rank <= target.rank:
            return None
        causes = "; ".join(f"{METRIC_BY_NAME[a.metric].label}: {a.reason}" for a in severe)
        set_level(
            session=session,
            line_id=line.id,
            level=target,
            actor=audit.SYSTEM_ACTOR,
            note=f"Severe drift, people judge every phone again. {causes}. Moving back up needs the normal approval.",
        )
        action = f"stepped the line down from {line.level.value} to {target.value}"
        for alarm in severe:
            alarm.action = action if not alarm.action else f"{alarm.action}; {action}"
        return (line.level.value, target.value)

    # -- scheduling (the worker) --------------------------------------------------------------

    def note_processed(self, line_ids: set[int]) -> bool:
        """After a batch: which of these lines have a check due, counted in the database.

        A check falls due once ``check_every`` phones were inspected since the line's last check.
        Returns True when a line has waited for twice that many: its check must not wait for a
        quiet queue any longer.
        """
        urgent = False
        for line_id in line_ids:
            with self.database.read() as session:
                config = drift_db.get_config(session=session, line_id=line_id)
                since = drift_db.phones_since_last_check(session=session, line_id=line_id)
            if since >= config.check_every:
                self._due_since.setdefault(line_id, time.monotonic())
                urgent = urgent or since >= 2 * config.check_every
        return urgent

    def oldest_due_age(self) -> float:
        """Seconds the longest-waiting due check has waited (0 when none is due)."""
        return time.monotonic() - min(self._due_since.values()) if self._due_since else 0.0

    def check_due(self) -> list[CheckOutcome]:
        """Check each line that has had ``check_every`` new phones since its last check."""
        outcomes = []
        for line_id in list(self._due_since):
            del self._due_since[line_id]
            outcome = self.check_if_due(line_id)
            if outcome is not None:  # None: another worker checked the line meanwhile
                outcomes.append(outcome)
        return outcomes

    # -- the admission check's runs -----------------------------------------------------------

    def check_admission_run(self, line_id: int, *, run: int, now: datetime | None = None) -> str | None:
        """Raise a severe alarm at once when the line's last ``run`` phones were all refused by the admission check.

        A lens cap or a dead camera must not wait for the next window check: the alarm is raised
        (once; a standing alarm is updated), and the line steps down to its ``step_down_to`` level
        when it is above it. Returns what was done, or None.
        """
        now = now or utcnow()
        with self.database.read() as session:  # mostly there is no run: found without taking the write lock
            latest = drift_db.recent_admissions(session=session, line_id=line_id, limit=run)
        if len(latest) < run or any(admitted for admitted, _ in latest):
            return None
        with self.database.write() as session:
            lock_line(session=session, line_id=line_id)  # one alarm and one step-down, whichever worker sees the run first
            latest = drift_db.recent_admissions(session=session, line_id=line_id, limit=run)
            if len(latest) < run or any(admitted for admitted, _ in latest):
                return None
            line = next(line for line in list_lines(session=session) if line.id == line_id)
            config = drift_db.get_config(session=session, line_id=line_id)
            alarms = drift_db.current_alarm_rows(session=session, line_id=line_id)
            reason = f"{run} phones in a row unlike the model's reference; the latest: {latest[0][1]}"
            alarm = alarms.get(ADMISSION_METRIC)
            done = None
            if alarm is None or alarm.cleared_at is not None:
                alarm = alarm or DriftAlarm(line_id=line.id, model_version_id=line.active_model_id, metric=ADMISSION_METRIC, kind="input", raised_at=now)
                alarm.severity = Severity.SEVERE.value
                alarm.statistic = "run"
                alarm.score = float(run)
                alarm.threshold = float(run)
                alarm.psi = None
                alarm.reason = reason
                alarm.last_seen_at = now
                alarm.cleared_at = None
                alarm.acknowledged_at = alarm.acknowledged_by = alarm.acknowledgement_note = None
                _store_raised(session, line, alarm, alarms, note=f"{reason}. Is the camera covered, dirty or pointed elsewhere?")
                done = f"severe alarm: {reason}"
            else:
                alarm.last_seen_at = now
            stepped_down = self._step_down_if_needed(session, line, {ADMISSION_METRIC: alarm}, config)
            drift_db.sync_incidents(session=session, line_id=line_id, now=now)
        if stepped_down:
            done = f"{done or reason}; stepped down from {stepped_down[0]} to {stepped_down[1]}"
            log.warning("line %s stepped down from %s to %s: %s", line.name, *stepped_down, reason)
        return done

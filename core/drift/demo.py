"""Drift demonstrations: a scenario run through the real worker, and when its drift was caught.

A run feeds a line from the synthetic camera in chunks: the phones are stored and queued, the
real worker inspects them (its drift monitor checks the line as it goes), and the simulated
inspector judges the phones routed to people. After each chunk the run notes which alarms are
open and the line's level, so it can say how many phones after the drift's onset each metric
took to alarm and when the line stepped down. ``scripts/drift_demo.py`` runs every scenario;
the tests run short versions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from core.camera import get_scenario
from core.line_simulator import SimulatedInspector, queue_simulated_phone
from core.settings import Settings
from core.vocabulary import AutomationLevel
from core.worker import Worker
from db import drift as drift_db
from db.engine import Database
from db.lines import get_line, set_level

#: The metrics that should catch each scenario: the drift is "caught" when one of them alarms.
EXPECTED_METRICS: dict[str, frozenset[str]] = {
    "dim-lights": frozenset({"brightness", "contrast", "mean_b", "mean_g", "mean_r"}),
    "blur": frozenset({"sharpness"}),
    "new-colour": frozenset({"colourfulness", "mean_b", "mean_g", "mean_r", "contrast"}),
    "new-defect": frozenset({"max_confidence", "boxes_per_phone", "defect_rate", "disagreement_rate", "override_rate"}),
    "glare": frozenset({"brightness", "contrast", "mean_b", "mean_g", "mean_r"}),
    # Camera faults are caught phone by phone by the admission check (a run of refusals), not by a window.
    "lens-cap": frozenset({"inadmissible_rate"}),
    "frozen-frame": frozenset({"inadmissible_rate"}),
}


@dataclass
class ScenarioRun:
    """What happened in one run (phone counts are after the drift's onset)."""

    scenario: str
    line: str
    phones: int
    onset: int
    ramp: int
    level_before: str
    level_after: str = ""
    alarms: dict[str, dict[str, Any]] = field(default_factory=dict)
    caught_after: int | None = None
    stepped_down_after: int | None = None
    false_alarms_before_onset: int = 0
    #: Checks made while the line was still normal, and how many single-metric drift verdicts they gave
    #: (an alarm needs ``consecutive`` of them in a row): the false-alarm exposure of the run.
    checks_before_onset: int = 0
    metric_checks_before_onset: int = 0
    drift_verdicts_before_onset: int = 0
    #: Phones from the onset on that the model decided alone (a camera fault: the target is 0).
    model_decided_after_onset: int = 0
    #: Phones from the onset on that the admission check refused.
    refused_after_onset: int = 0
    #: Alarms raised in the run and the incidents they were grouped into (one thing to act on each).
    alarms_raised: int = 0
    incidents: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_scenario(
    database: Database,
    settings: Settings,
    *,
    line_name: str,
    scenario_name: str,
    phones: int,
    onset: int = 0,
    ramp: int = 0,
    seed: int = 31_337,
    level: AutomationLevel = AutomationLevel.CANARY,
    chunk: int = 50,
    stop_when_stepped_down: bool = True,
    inspector: SimulatedInspector | None = None,
    run_on: int = 0,
    progress: Callable[[str], None] = lambda _: None,
) -> ScenarioRun:
    """Feed ``phones`` phones of a scenario to a line at ``level`` through the worker; see the module doc.

    With ``stop_when_stepped_down`` the run ends ``run_on`` phones after the line stepped down (the
    alarms that follow the first ones are counted too).
    """
    import time

    started = time.monotonic()
    scenario = get_scenario(scenario_name).with_ramp(ramp=ramp, onset=onset)
    inspector = inspector or SimulatedInspector()
    with database.write() as session:
        line = get_line(session=session, name=line_name)
        if line.level is not level:
            set_level(session=session, line_id=line.id, level=level, actor="drift-demo", note=f"drift demonstration of {scenario_name}")
    run = ScenarioRun(scenario=scenario_name, line=line_name, phones=0, onset=onset, ramp=ramp, level_before=level.value)
    worker = Worker(database, settings, worker_id=f"drift-demo-{scenario_name}", batch_size=16)
    expected = EXPECTED_METRICS.get(scenario_name, frozenset())
    index = 0
    while index < phones:
        for i in range(index, min(index + chunk, phones)):
            queue_simulated_phone(database, settings, line_id=line.id, line_name=line_name, scenario=scenario, seed=seed, index=i)
        index = min(index + chunk, phones)
        worker.run(until_empty=True)
        inspector.answer_open_tasks(database, line_id=line.id, limit=10 * chunk)
        after_onset = index - onset
        with database.read() as session:
            alarms = drift_db.current_alarms(session=session, line_id=line.id)
            current_level = get_line(session=session, name=line_name).level
        for alarm in alarms:
            if alarm.metric not in run.alarms:
                run.alarms[alarm.metric] = {"severity": alarm.severity, "after": after_onset, "statistic": alarm.statistic, "reason": alarm.reason}
                if after_onset <= 0:
                    run.false_alarms_before_onset += 1
            elif alarm.severity == "severe" and run.alarms[alarm.metric]["severity"] != "severe":
                run.alarms[alarm.metric].update(severity="severe", severe_after=after_onset, reason=alarm.reason)
        if after_onset <= 0:
            with database.read() as session:
                checks = drift_db.check_history(session=session, line_id=line.id)
            run.checks_before_onset = len(checks)
            run.metric_checks_before_onset = sum(len(c.results) for c in checks)
            run.drift_verdicts_before_onset = sum(1 for c in checks for r in c.results if r["verdict"] == "drift")
        if run.caught_after is None and after_onset > 0 and any(m in expected for m in run.alarms):
            run.caught_after = after_onset
        if run.stepped_down_after is None and current_level.rank < level.rank:
            run.stepped_down_after = max(after_onset, 0)
        progress(f"{scenario_name}: {index} phones, level {current_level.value}, alarms {', '.join(sorted(run.alarms)) or 'none'}")
        if stop_when_stepped_down and run.stepped_down_after is not None and run.caught_after is not None and after_onset >= run.stepped_down_after + run_on:
            break
    worker.beat(state="stopped")
    with database.read() as session:
        for serial, decided_by, admitted in drift_db.decisions_by_serial(session=session, line_id=line.id):
            if int(serial.rsplit("-", 1)[-1]) >= onset:
                run.model_decided_after_onset += decided_by == "model"
                run.refused_after_onset += admitted is False
    with database.read() as session:
        raised = drift_db.alarm_history(session=session, line_id=line.id)
    run.alarms_raised = len(raised)
    run.incidents = len({a.incident_id for a in raised})
    run.phones = index
    run.level_after = current_level.value
    run.seconds = round(time.monotonic() - started, 1)
    return run

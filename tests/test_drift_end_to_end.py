"""Drift through the real worker: each drifting scenario alarms on its own metric and steps the line down;
the normal line raises nothing. (The full-length run with onsets and ramps is scripts/drift_demo.py.)"""

from __future__ import annotations

import pytest

from core.drift.demo import EXPECTED_METRICS, run_scenario
from core.drift.metrics import METRICS, MetricKind
from db import audit
from db.lines import add_line, get_line

MAX_PHONES = 800


def _new_line(database, name: str) -> str:
    with database.write() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
        add_line(session=session, name=name, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
    return name


@pytest.mark.parametrize("scenario", ["dim-lights", "blur", "new-colour", "new-defect"])
def test_drift_is_caught_by_its_metric_and_the_line_steps_down(database, settings, scenario: str) -> None:
    line = _new_line(database, f"e2e-{scenario}")
    run = run_scenario(database, settings, line_name=line, scenario_name=scenario, phones=MAX_PHONES, onset=0, ramp=0, seed=4040)
    assert run.caught_after is not None and run.caught_after <= MAX_PHONES, run.as_dict()
    assert set(run.alarms) & EXPECTED_METRICS[scenario], run.alarms
    assert run.level_before == "canary" and run.level_after == "shadow" and run.stepped_down_after is not None


def test_a_normal_line_raises_no_alarm(database, settings) -> None:
    line = _new_line(database, "e2e-normal")
    run = run_scenario(database, settings, line_name=line, scenario_name="normal", phones=600, seed=5050, stop_when_stepped_down=False)
    # The software metrics (inference latency) measure this machine, not the line: a busy test
    # machine may rightly warn about them. The data must raise nothing.
    software = {spec.name for spec in METRICS if spec.kind is MetricKind.SOFTWARE}
    data_alarms = {metric: alarm for metric, alarm in run.alarms.items() if metric not in software}
    assert data_alarms == {}, data_alarms
    if all(alarm["severity"] != "severe" for alarm in run.alarms.values()):
        assert run.level_after == "canary"

"""The drift commands' contract: `drift --json`, alarms in `status --json`, acting `--as` a user, refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from core.drift.monitor import DriftMonitor
from core.drift.reference import REFERENCE_FILE, compute_model_reference, generated_images, load_model_reference
from core.vocabulary import Role
from db import drift as drift_db
from db.lines import get_line
from db.users import add_user
from tests.conftest import cli, cli_env
from tests.drift_data import add_phones

PASSWORDS = {"erin": "engineer-pass", "sam": "supervisor-pass"}


def _run(settings, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
    env = cli_env(settings)
    if password is not None:
        env["SHADOWLINE_PASSWORD"] = password
    return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


@pytest.fixture
def drifting(database, drift_reference):
    with database.write() as session:
        add_user(session=session, name="erin", role=Role.ENGINEER, password=PASSWORDS["erin"], actor="test")
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password=PASSWORDS["sam"], actor="test")
        line_id = get_line(session=session, name="line-1").id
    add_phones(database, drift_reference, 500, seed=31, darken=0.4)
    return line_id


def test_drift_json_has_every_metric_with_its_statistic(settings, drifting) -> None:
    result = _run(settings, "drift", "--line", "line-1", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert len(data["metrics"]) == 16
    for metric in data["metrics"]:
        assert {"metric", "statistic", "score", "threshold", "drifted", "n_reference", "n_current", "verdict"} <= set(metric)
        assert metric["verdict"] in ("ok", "drift", "inconclusive")
    brightness = next(m for m in data["metrics"] if m["metric"] == "brightness")
    assert brightness["verdict"] == "drift" and brightness["drifted"] and brightness["statistic"] == "ks" and brightness["n_current"] == 500
    small = json.loads(_run(settings, "drift", "--line", "line-1", "--json", "--window-phones", "50").stdout)
    assert next(m for m in small["metrics"] if m["metric"] == "brightness")["verdict"] == "inconclusive"


def test_checks_raise_alarms_that_status_shows_and_an_engineer_acknowledges(database, settings, drifting) -> None:
    for _ in range(2):
        assert _run(settings, "drift", "--check").returncode == 0
    status = json.loads(_run(settings, "status", "--json").stdout)
    alarms = status["lines"][0]["alarms"]
    brightness = next(a for a in alarms if a["metric"] == "brightness")
    assert brightness["severity"] == "severe" and brightness["acknowledged"] is False and brightness["raised_at"]

    refused = _run(settings, "alarms", "ack", str(brightness["id"]), "--note", "seen", "--as", "sam", password=PASSWORDS["sam"])
    assert refused.returncode == 1 and refused.stderr.startswith("error: ") and "may not acknowledge alarm" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    wrong = _run(settings, "alarms", "ack", str(brightness["id"]), "--note", "seen", "--as", "erin", password="not-it")
    assert wrong.returncode == 1 and "Wrong user name or password" in wrong.stderr
    no_password = _run(settings, "alarms", "ack", str(brightness["id"]), "--note", "seen", "--as", "erin")
    assert no_password.returncode == 1 and "SHADOWLINE_PASSWORD" in no_password.stderr
    with database.read() as session:
        assert not any(a.acknowledged for a in drift_db.current_alarms(session=session))

    done = _run(settings, "alarms", "ack", str(brightness["id"]), "--note", "lamp replaced", "--as", "erin", password=PASSWORDS["erin"])
    assert done.returncode == 0, done.stderr
    listed = json.loads(_run(settings, "alarms", "list", "--json").stdout)
    assert next(a for a in listed if a["id"] == brightness["id"])["acknowledged_by"] == "erin"

    # The rest of the cause at once: the incident, acknowledged once with every alarm in it.
    incident = brightness["incident_id"]
    whole = _run(settings, "alarms", "ack", str(incident), "--incident", "--note", "lamp replaced", "--as", "erin", password=PASSWORDS["erin"])
    assert whole.returncode == 0, whole.stderr
    assert whole.stdout.startswith(f"incident #{incident} (line-1: input drift — brightness down") and "acknowledged by erin" in whole.stdout
    with database.read() as session:
        assert not drift_db.current_alarms(session=session, unacknowledged_only=True)
    again = _run(settings, "alarms", "ack", str(incident), "--incident", "--note", "again", "--as", "erin", password=PASSWORDS["erin"])
    assert again.returncode == 1 and "already acknowledged" in again.stderr


def test_drift_settings_change_as_an_engineer_and_refuse_bad_values(database, settings, drifting) -> None:
    changed = _run(settings, "drift-settings", "--set", "window_phones=300", "--set", "brightness.psi_severe=0.3", "--as", "erin", password=PASSWORDS["erin"])
    assert changed.returncode == 0, changed.stderr
    assert json.loads(changed.stdout)["thresholds"] == {"brightness": {"psi_severe": 0.3}}
    for bad in ("windows=3", "brightness.nope=1", "window_phones=0"):
        result = _run(settings, "drift-settings", "--set", bad, "--as", "erin", password=PASSWORDS["erin"])
        assert result.returncode == 1 and result.stderr.startswith("error: "), (bad, result.stderr)
    refused = _run(settings, "drift-settings", "--set", "window_phones=100", "--as", "sam", password=PASSWORDS["sam"])
    assert refused.returncode == 1 and "may not" in refused.stderr
    with database.read() as session:
        assert drift_db.get_config(session=session, line_id=drifting).window_phones == 300


def test_reference_accept_and_reset(database, settings, drifting) -> None:
    too_short = _run(settings, "reference", "accept", "--since", "2020-01-01", "--until", "2020-01-02", "--as", "erin", password=PASSWORDS["erin"])
    assert too_short.returncode == 1 and "at least 200" in too_short.stderr
    accepted = _run(settings, "reference", "accept", "--since", "2020-01-01", "--until", "2099-01-01", "--as", "erin", password=PASSWORDS["erin"])
    assert accepted.returncode == 0, accepted.stderr
    report = DriftMonitor(database).evaluate("line-1")
    assert report.reference_source == "production" and report.verdict("brightness").verdict == "ok"
    assert _run(settings, "reference", "reset", "--as", "erin", password=PASSWORDS["erin"]).returncode == 0
    assert DriftMonitor(database).evaluate("line-1").reference_source == "model"


def test_a_model_reference_is_computed_stored_and_checked(tmp_path: Path, shipped_model_dir: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(shipped_model_dir, folder)
    recipe = {"train_count": 12, "val_count": 6, "train_seed": 5, "val_seed": 6, "defect_rate": 0.5, "scenario": "normal"}
    compute_model_reference(folder, generated_images(recipe), progress=lambda _: None)
    reference = load_model_reference(folder)
    assert reference.phones == 18 and reference.defective is not None and len(reference.sample_images) == 6
    assert set(reference.sample.values["defect_rate"]) <= {"pass", "reject"}
    stored = folder / REFERENCE_FILE
    stored.write_text(stored.read_text().replace('"boxes":[', '"boxes":[9,', 1))
    with pytest.raises(Exception, match="refusing a changed reference"):
        load_model_reference(folder)

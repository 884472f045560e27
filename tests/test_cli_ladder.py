"""The ladder's and the models' commands: acting --as a user, the same checks as the pages, refusals change nothing."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from core.ladder import actions
from core.vocabulary import Role
from db.lines import get_line
from db.users import add_user
from tests.conftest import cli, cli_env
from tests.drift_data import add_phones

PASSWORDS = {"sam": "supervisor-pass", "erin": "engineer-pass", "mo": "manager-pass", "root": "admin-pass-1"}
ROLES = {"sam": Role.SUPERVISOR, "erin": Role.ENGINEER, "mo": Role.MANAGER, "root": Role.ADMIN}


def _run(settings, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
    env = cli_env(settings)
    if user:
        env["SHADOWLINE_PASSWORD"] = PASSWORDS[user]
        args = (*args, "--as", user)
    return subprocess.run(cli(*args), env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def _level(database) -> str:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    return actions.current_rung(line).key


@pytest.fixture
def people(database):
    with database.write() as session:
        for name, role in ROLES.items():
            add_user(session=session, name=name, role=role, password=PASSWORDS[name], actor="test")


def _refused(result: subprocess.CompletedProcess, text: str) -> None:
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, result.stderr


@pytest.mark.both_backends
def test_climbing_to_canary_through_gates_and_a_managers_approval(database, settings, people, drift_reference) -> None:
    assert _run(settings, "gates", "--set", "assist.min_pairs=60", "--set", "partial.min_pairs=60", "--set", "canary.min_pairs=60", user="root").returncode == 0
    _refused(_run(settings, "level", "--to", "assist", user="sam"), "not enough evidence yet")
    _refused(_run(settings, "level", "--to", "partial", user="sam"), "one rung at a time")
    _refused(_run(settings, "level", "--to", "warp", user="sam"), "choose one of")
    add_phones(database, drift_reference, 300, seed=1)
    gates = json.loads(_run(settings, "gates", "--json").stdout)
    assert gates["rung"] == "shadow" and gates["next"]["status"] == "met" and gates["next"]["target"] == "assist"
    assert _run(settings, "level", "--to", "assist", user="sam").returncode == 0
    add_phones(database, drift_reference, 300, seed=2)
    assert _run(settings, "level", "--to", "partial", user="erin").returncode == 0
    add_phones(database, drift_reference, 300, seed=3)
    _refused(_run(settings, "level", "--to", "canary", user="root"), "may not request promotion")
    asked = _run(settings, "level", "--to", "canary", "--note", "a week of good numbers", user="erin")
    assert asked.returncode == 0 and "a manager must approve" in asked.stdout and _level(database) == "partial"
    (request,) = json.loads(_run(settings, "requests", "--json").stdout)
    _refused(_run(settings, "approve", str(request["id"]), user="erin"), "may not approve promotion")
    assert _level(database) == "partial"
    approved = _run(settings, "approve", str(request["id"]), "--note", "go", user="mo")
    assert approved.returncode == 0, approved.stderr
    assert _level(database) == "canary"
    assert _run(settings, "level", "--to", "shadow", user="sam").returncode == 0 and _level(database) == "shadow"


def test_model_commands_set_switch_and_roll_back(database, settings, people, shipped_model_dir, tmp_path) -> None:
    folder = tmp_path / "green"
    shutil.copytree(shipped_model_dir, folder)
    card = json.loads((folder / "card.json").read_text())
    card["version"] = "green"
    (folder / "card.json").write_text(json.dumps(card))
    _refused(_run(settings, "model", "register", str(folder), user="sam"), "may not switch model")
    assert _run(settings, "model", "register", str(folder), user="erin").returncode == 0
    _refused(_run(settings, "model", "switch", "--to", "green", user="erin"), "no candidate")
    assert _run(settings, "model", "candidate", "--version", "green", user="erin").returncode == 0
    listed = {m["version"]: m["status"] for m in json.loads(_run(settings, "model", "list", "--json").stdout)}
    assert listed == {"scratch-v2": "active on line-1", "green": "candidate on line-1"}
    assert _run(settings, "model", "switch", "--to", "green", user="erin").returncode == 0
    with database.read() as session:
        assert get_line(session=session, name="line-1").active_model_version == "green"
    assert _run(settings, "model", "rollback", user="sam").returncode == 0
    with database.read() as session:
        assert get_line(session=session, name="line-1").active_model_version == "scratch-v2"
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    card["version"] = "tampered"
    (tampered / "card.json").write_text(json.dumps(card))
    (tampered / "model.onnx").write_bytes(b"not a model")
    _refused(_run(settings, "model", "register", str(tampered), user="erin"), "does not match its card")


def test_gates_settings_are_admin_only(settings, people) -> None:
    _refused(_run(settings, "gates", "--set", "canary.min_pairs=1", user="mo"), "may not edit settings")
    _refused(_run(settings, "gates", "--set", "canary.nope=1", user="root"), "no field")
    assert json.loads(_run(settings, "gates", "--json").stdout)["config"]["gates"]["canary"]["min_pairs"] == 500


def test_actions_need_a_known_user_and_password(settings, people) -> None:
    env = cli_env(settings) | {"SHADOWLINE_PASSWORD": "wrong-password"}
    result = subprocess.run(cli("level", "--to", "human_only", "--as", "sam"), env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    _refused(result, "Wrong user name or password")


def test_gates_says_whether_the_simulated_inspectors_judgements_count(database, settings, people, drift_reference) -> None:
    add_phones(database, drift_reference, 40, seed=4, simulated=True)
    shown = _run(settings, "gates")
    assert shown.returncode == 0, shown.stderr
    assert "the simulated inspector judged 40 of the 40 phones: not counted" in shown.stdout, shown.stdout
    # A refused move says the same, so its numbers can be read beside the Automation page's (which `up` counts them on).
    _refused(_run(settings, "level", "--to", "assist", user="erin"), "the simulated inspector's 40 judgements are not counted here")

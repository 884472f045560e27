"""The command line's contract: one JSON object, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess

import pytest
from sqlalchemy import select

from db.models import AuditEntry
from tests.conftest import cli, cli_env


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--line", "nope", "--count", "1"),  # unknown line
        ("simulate", "--scenario", "foggy", "--count", "1"),  # unknown scenario
        ("evaluate", "--scenario", "foggy"),  # unknown scenario
        ("evaluate", "--model", "/nonexistent/model"),  # missing model
        ("line", "add", "bad name!"),  # invalid line name
    ],
)
def test_errors_exit_non_zero_with_one_line(database, settings, args):
    result = subprocess.run(cli(*args), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1


def test_wrong_arguments_exit_2(settings):
    result = subprocess.run(cli("worker", "--batch-size", "lots"), env=cli_env(settings), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--batch-size: the value must be a whole number, got 'lots'" in result.stderr


@pytest.mark.both_backends
def test_init_is_idempotent_and_line_add_adds(settings, shipped_model_dir):
    env = cli_env(settings)
    for _ in range(2):
        result = subprocess.run(cli("init"), env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "lines: line-1" in result.stdout and f"model: {shipped_model_dir.name}" in result.stdout
    assert subprocess.run(cli("line", "add", "line-2"), env=env, capture_output=True, timeout=60).returncode == 0
    status = json.loads(subprocess.run(cli("status", "--json"), env=env, capture_output=True, text=True, timeout=60).stdout)
    assert [line["line"] for line in status["lines"]] == ["line-1", "line-2"]
    assert all(line["active_model"] == shipped_model_dir.name for line in status["lines"])


def test_evaluate_json_interface(settings, shipped_model_dir):
    result = subprocess.run(
        cli("evaluate", "--scenario", "normal", "--count", "12", "--seed", "5", "--json"), env=cli_env(settings), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    for key in ("precision", "recall", "map50", "phone_recall", "escape_rate", "false_reject_rate", "count", "scenario", "model_version"):
        assert key in payload
    assert payload["count"] == 12 and payload["scenario"] == "normal" and payload["model_version"] == shipped_model_dir.name


# --- every wrong invocation: one line `error: ...`, never a traceback (issue 12) -------------------

ADMIN = ("--as", "root")
WRONG_ARGUMENTS = [  # exit 2: argparse refuses them before anything runs
    ("worker", "--batch-size", "0"),  # processed nothing while status said "alive"
    ("worker", "--batch-size", "-1"),  # claimed the whole queue under one lease
    ("worker", "--batch-size", "1.5"),
    ("worker", "--lease-seconds", "0"),
    ("worker", "--lease-seconds", "-3"),
    ("worker", "--threads", "-1"),
    ("worker", "--max-seconds", "0"),
    ("worker", "--batch-size"),  # missing value
    ("simulate", "--rate", "0"),
    ("simulate", "--rate", "nan"),
    ("simulate", "--count", "0"),
    ("simulate", "--miss-rate", "1.5"),
    ("simulate", "--false-reject-rate", "-0.1"),
    ("simulate", "--ramp", "-1"),
    ("simulate", "--drain-seconds", "-1"),
    ("simulate", "--inspector", "robot"),
    ("watch",),  # missing folder
    ("watch", ".", "--poll-seconds", "-1"),
    ("watch", ".", "--max-seconds", "inf"),
    ("ingest",),  # missing paths
    ("evaluate", "--count", "0"),
    ("evaluate", "--backend", "gpu"),
    ("bench", "detector", "--images", "0"),
    ("bench", "worker", "--rounds", "-2"),
    ("bench", "everything"),
    ("up", "--port", "0"),
    ("up", "--port", "70000"),
    ("up", "--rate", "-2"),
    ("up", "--scenario", "foggy"),
    ("drift", "--window-phones", "0"),
    ("drift", "--window-minutes", "-5"),
    ("approve", "0", "--as", "mo"),
    ("approve", "one", "--as", "mo"),
    ("alarms", "ack", "-1", "--note", "x", "--as", "erin"),
    ("alarms", "ack", "1", "--as", "erin"),  # missing --note
    ("reference", "accept", "--since", "yesterday", "--until", "2026-01-01", "--as", "erin"),  # a bad time string
    ("reference", "accept", "--since", "2026-01-01", "--until", "2026-13-01", "--as", "erin"),
    ("dataset", "export", "--name", "x", "--val-share", "1.5"),
    ("dataset", "export", "--name", "x", "--generated-train", "-1"),
    ("job", "run", "0"),
    ("train", "--version", "v", "--epochs", "0"),
    ("train", "--version", "v", "--batch", "-1"),
    ("train", "--version", "v", "--imgsz", "8"),
    ("level", "--to", "full"),  # missing --as
    ("users", "add", "x", "--role", "king"),
    ("model",),  # missing action
    ("no-such-command",),
    ("status", "--bogus"),
    (),  # no command at all
]
REFUSED = [  # exit 1: well-formed, refused by what they ask or by the environment
    ("ingest", "/nonexistent/folder"),  # a missing folder
    ("watch", "/nonexistent/folder"),
    ("watch", "/etc/passwd"),  # not a folder
    ("status", "--json"),  # ... under a bad environment, below
    ("level", "--line", "line-9", "--to", "shadow", "--as", "sam"),  # an unknown line
    ("level", "--to", "sky", "--as", "sam"),
    ("drift", "--line", "line-9"),
    ("alarms", "list", "--line", "line-9"),
    ("gates", "--set", "rollback.max_disagreement=2", *ADMIN),  # silently disabled rollback before
    ("gates", "--set", "rollback.max_disagreement=1", *ADMIN),
    ("gates", "--set", "rollback.max_disagreement=-0.1", *ADMIN),
    ("gates", "--set", "rollback.min_pairs=0", *ADMIN),
    ("gates", "--set", "rollback.to_level=full", *ADMIN),
    ("gates", "--set", "canary.min_pairs=0", *ADMIN),
    ("gates", "--set", "canary.min_agreement=0", *ADMIN),
    ("gates", "--set", "full.max_escape_rate=1", *ADMIN),
    ("gates", "--set", "full.needs_manager=false", *ADMIN),
    ("gates", "--set", "full.needs_manager=maybe", *ADMIN),
    ("gates", "--set", "canary.min_pairs=many", *ADMIN),
    ("gates", "--set", "canary", *ADMIN),
    ("gates", "--set", "canary.min_pairs=10"),  # missing --as
    ("drift-settings", "--set", "window_phones=0", "--as", "erin"),
    ("drift-settings", "--set", "consecutive=-1", "--as", "erin"),
    ("drift-settings", "--set", "brightness.p_value=0", "--as", "erin"),
    ("drift-settings", "--set", "brightness.psi_severe=0.05", "--as", "erin"),  # below its warning level
    ("drift-settings", "--set", "disagreement_rate.margin_severe=1", "--as", "erin"),
    ("drift-settings", "--set", "step_down_to=full", "--as", "erin"),
    ("drift-settings", "--set", "window_phones=lots", "--as", "erin"),
    ("drift-settings", "--set", "reference_defect_rate=1", "--as", "erin"),
    ("drift", "--check", "--window-phones", "10"),
    ("reference", "accept", "--since", "2026-02-01", "--until", "2026-01-01", "--as", "erin"),
    ("reference", "compute", "--model", "/nonexistent/model"),
    ("approve", "999", "--as", "mo"),
    ("alarms", "ack", "999", "--note", "x", "--as", "erin"),
    ("model", "register", "/nonexistent/model", "--as", "erin"),
    ("model", "candidate", "--version", "v-none", "--as", "erin"),
    ("train", "--version", "v", "--dataset", "/nonexistent/dataset"),
    ("train", "--version", "scratch-v2"),  # exists already
]
BAD_ENVIRONMENT = [  # exit 1, for `status` (or the command given)
    {"SHADOWLINE_DATABASE_URL": "not a url"},
    {"SHADOWLINE_DATABASE_URL": "nosuchdialect://x"},
    {"SHADOWLINE_DATABASE_URL": "postgresql+psycopg://u:secret@127.0.0.1:1/x"},
    {"SHADOWLINE_DATABASE_URL": "sqlite:///{tmp}/not-a-database"},  # a file that is not a database
    {"SHADOWLINE_DATA_DIR": "{tmp}/a-file/data"},  # a data folder under a file
    {"SHADOWLINE_DATA_DIR": "/proc/shadowline"},  # a data folder that cannot be created
    {"SHADOWLINE_MAX_IMAGE_MB": "0"},
    {"SHADOWLINE_MAX_IMAGE_MB": "lots"},
    {"SHADOWLINE_MAX_TRAINING_JOBS": "0"},
    {"SHADOWLINE_TIMEZONE": "Mars/Olympus"},
]


def _one_error_line(result: subprocess.CompletedProcess, code: int, what: object) -> None:
    assert "Traceback" not in result.stderr, (what, result.stderr)
    assert result.returncode == code, (what, result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (what, result.stderr)


@pytest.fixture
def people_env(database, settings):
    from core.vocabulary import Role
    from db.users import add_user

    with database.write() as session:
        for name, role in (("sam", Role.SUPERVISOR), ("erin", Role.ENGINEER), ("mo", Role.MANAGER), ("root", Role.ADMIN)):
            add_user(session=session, name=name, role=role, password="the-password", actor="test")
    return cli_env(settings) | {"SHADOWLINE_PASSWORD": "the-password"}


def test_no_wrong_invocation_prints_a_traceback(settings, people_env, tmp_path):
    assert len(WRONG_ARGUMENTS) + len(REFUSED) + len(BAD_ENVIRONMENT) >= 76
    for args in WRONG_ARGUMENTS:
        result = subprocess.run(cli(*args), env=people_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        _one_error_line(result, 2, args)
    for args in REFUSED:
        if args == ("status", "--json"):
            continue
        result = subprocess.run(cli(*args), env=people_env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        _one_error_line(result, 1, args)
    (tmp_path / "not-a-database").write_text("hello\n")
    (tmp_path / "a-file").write_text("")
    for changes in BAD_ENVIRONMENT:
        env = people_env | {key: value.format(tmp=tmp_path) for key, value in changes.items()}
        result = subprocess.run(cli("status", "--json"), env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        _one_error_line(result, 1, changes)
        assert "secret" not in result.stderr, "a password in the database URL is never printed"


def test_gates_off_is_explicit_and_audited(database, settings, people_env):
    result = subprocess.run(cli("gates", "--set", "rollback.max_disagreement=2", *ADMIN), env=people_env, capture_output=True, text=True, timeout=60)
    assert "would never roll a line back" in result.stderr and "rollback.max_disagreement=off" in result.stderr
    result = subprocess.run(
        cli("gates", "--set", "rollback.max_disagreement=off", "--note", "line stopped for a week", *ADMIN, "--json"),
        env=people_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["rollback"]["max_disagreement"] is None
    with database.read() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "gates.settings").order_by(AuditEntry.id.desc())).first()
        assert entry.note == "SAFETY OFF: rollback.max_disagreement; line stopped for a week" and entry.actor == "root"


def test_a_bug_logs_its_traceback_to_a_file_and_prints_one_line(settings, monkeypatch, capsys):
    from core import cli as cli_module

    def broken(args):
        raise RuntimeError("something the code did not expect\nsecond line")

    parser = cli_module.build_parser()
    monkeypatch.setattr(cli_module, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["init"].set_defaults(handler=broken)
    monkeypatch.setattr(cli_module, "get_settings", lambda: settings)
    assert cli_module.main(["init"]) == 1
    err = capsys.readouterr().err
    log_file = settings.data_dir / "logs" / "shadowline.log"
    assert err.strip() == f"error: unexpected RuntimeError: something the code did not expect (the full traceback is in {log_file})"
    assert "Traceback (most recent call last)" in log_file.read_text() and "second line" in log_file.read_text()


def test_line_answer_is_changed_by_engineers_and_admins_never_to_pass(database, settings):
    from core.vocabulary import Role
    from db.lines import get_line
    from db.users import add_user

    with database.write() as session:
        add_user(session=session, name="erin", role=Role.ENGINEER, password="erin-password-1", actor="test")
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="sam-password-1", actor="test")

    def run(user: str, *args: str) -> subprocess.CompletedProcess:
        env = {**cli_env(settings), "SHADOWLINE_PASSWORD": f"{user}-password-1"}
        return subprocess.run(cli("line", "answer", "--line", "line-1", "--as", user, *args), env=env, capture_output=True, text=True, timeout=60)

    changed = run("erin", "--budget-ms", "450", "--failsafe", "reject", "--note", "faster gate")
    assert changed.returncode == 0 and "answer budget 450 ms, fail-safe reject" in changed.stdout, changed
    assert "warning" not in changed.stderr
    short = run("erin", "--budget-ms", "5")  # accepted (a test bench may want it), with a warning of what it does
    assert short.returncode == 0 and "warning: 5 ms is shorter than the model alone takes" in short.stderr and "fail-safe (reject)" in short.stderr, short
    changed = run("erin", "--budget-ms", "450")
    refused = run("sam", "--budget-ms", "100")
    assert refused.returncode == 1 and "may not edit answer settings" in refused.stderr, refused
    never_pass = run("erin", "--failsafe", "pass")
    assert never_pass.returncode == 2, never_pass
    with database.read() as session:
        line = get_line(session=session, name="line-1")
        entry = session.scalars(select(AuditEntry).where(AuditEntry.actor == "erin").order_by(AuditEntry.id)).first()
    assert (line.answer_budget_ms, line.failsafe_action, entry.note) == (450, "reject", "faster gate")


def test_users_change_sets_a_role_disables_enables_and_sets_a_password(database, settings):
    from core.auth import CurrentUser
    from core.vocabulary import Role
    from db.users import add_user, sign_in

    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="test")
    env = cli_env(settings)

    def change(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli("users", "change", "sam", *args), env=env, input=stdin, capture_output=True, text=True, timeout=60)

    assert "role supervisor -> engineer; disabled" in change("--role", "engineer", "--disable").stdout
    with database.write() as session:
        assert sign_in(session=session, name="sam", password="line-one-pass").user is None
    assert "may sign in again; password set" in change("--enable", "--password", stdin="sam-new-pass\n").stdout
    with database.write() as session:
        assert sign_in(session=session, name="sam", password="sam-new-pass").user == CurrentUser("sam", Role.ENGINEER)
    assert "nothing changed" in change("--role", "engineer").stdout
    nothing = change()
    assert nothing.returncode == 1 and nothing.stderr.startswith("error: nothing to change")
    short = change("--password", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    with database.read() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).where(AuditEntry.entity_id == "sam").order_by(AuditEntry.id))]
    assert actions == ["user.create", "user.change", "user.change"]


def test_keys_add_list_and_revoke_from_the_command_line(database, settings):
    env = cli_env(settings)
    listed = subprocess.run(cli("keys", "list"), env=env, capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stdout.startswith("no keys"), listed
    added = subprocess.run(cli("keys", "add", "--line", "line-1", "--name", "camera-1"), env=env, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and "shown this once" in added.stderr, added
    key = added.stdout.strip()
    listed = subprocess.run(cli("keys", "list"), env=env, capture_output=True, text=True, timeout=120).stdout.splitlines()
    assert listed[0].split() == ["key", "line", "station", "created", "by", "state"], "a header names the columns"
    [row] = listed[1:]
    assert row.split()[0] in key and row.split()[1:3] == ["line-1", "camera-1"] and row.endswith("active")
    revoked = subprocess.run(cli("keys", "revoke", row.split()[0]), env=env, capture_output=True, text=True, timeout=120)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout, revoked
    assert subprocess.run(cli("keys", "list"), env=env, capture_output=True, text=True, timeout=120).stdout.startswith("no keys")

"""Migrating is a step of its own: processes starting together on a new database, and a worker before any migration."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import text

from db.migrate import current_revision, head_revision
from tests.conftest import cli, cli_env

pytestmark = pytest.mark.both_backends


def test_three_processes_starting_on_a_new_database_at_once_all_succeed(settings, empty_database) -> None:
    env = cli_env(settings) | {"SHADOWLINE_ADMIN_PASSWORD": "first-admin-pass"}
    commands = [cli("init"), cli("migrate"), cli("init")]
    processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for command in commands]
    outputs = [(p.wait(timeout=300), *p.communicate()) for p in processes]
    assert [code for code, _, _ in outputs] == [0, 0, 0], outputs
    assert current_revision(empty_database.engine) == head_revision()
    with empty_database.engine.connect() as connection:
        counts = [connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() for table in ("lines", "users", "model_versions")]
    assert counts == [1, 1, 1]


def test_a_worker_on_a_database_nobody_migrated_refuses_with_one_line(settings, empty_database, backend) -> None:
    env = cli_env(settings) | {"SHADOWLINE_SCHEMA_WAIT_S": "1"}
    result = subprocess.run(cli("worker", "--once"), env=env, capture_output=True, text=True, timeout=120)
    if backend == "sqlite":  # one machine: opening the database upgrades it (under the lock)
        assert result.returncode == 0, result.stderr
        assert current_revision(empty_database.engine) == head_revision()
        return
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: the database has no Shadowline schema yet: run `shadowline migrate` (or `shadowline init`) once, from one machine"
    ]
    assert current_revision(empty_database.engine) is None


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_init_never_prints_the_database_password(settings) -> None:  # SQLite URLs carry no password
    with_password = settings.database_url.replace("postgres@", "postgres:hunter2-secret@")  # the test server trusts 127.0.0.1
    result = subprocess.run(cli("init"), env=cli_env(settings) | {"SHADOWLINE_DATABASE_URL": with_password}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout + result.stderr and "postgres:***@" in result.stdout


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_missing_driver_is_one_line(settings) -> None:
    code = "import sys; sys.modules['psycopg'] = None; from core.cli import main; sys.exit(main(['init']))"
    env = cli_env(settings) | {"SHADOWLINE_DATABASE_URL": "postgresql+psycopg://u:secret@127.0.0.1:1/x"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "secret" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: the PostgreSQL driver is not installed: pip install 'shadowline[postgres]' (psycopg 3)"]

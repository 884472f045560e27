"""The command line's contract: one JSON object, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import cli, cli_env


@pytest.mark.parametrize(
    "args",
    [
        ("simulate", "--line", "nope", "--count", "1"),  # unknown line
        ("simulate", "--scenario", "foggy", "--count", "1"),  # unknown scenario
        ("simulate", "--count", "1", "--rate", "0"),  # impossible rate
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
    assert result.returncode == 2 and "invalid int value" in result.stderr


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

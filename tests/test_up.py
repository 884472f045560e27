"""`shadowline up` starts the whole product and stops all of it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from tests.conftest import cli, cli_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_up_serves_the_app_runs_the_worker_and_the_line_then_stops_everything(settings, shipped_model_dir):
    """Both demonstration lines get phones from their own station through the service, and are decided."""
    port = _free_port()
    env = cli_env(settings)
    product = subprocess.Popen(
        cli("up", "--port", str(port), "--service-port", str(_free_port()), "--rate", "3"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        # Bounded, but generous: the worker, the service, two stations and the app start on a machine that may be busy.
        deadline = time.monotonic() + 240
        healthy = False
        decided: dict[str, int] = {}
        lines: dict[str, dict] = {}
        while time.monotonic() < deadline and not (healthy and len(decided) == 2 and min(decided.values()) >= 5):
            time.sleep(1)
            try:
                healthy = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok"
            except OSError:
                continue
            status = subprocess.run(cli("status", "--json"), env=env, capture_output=True, text=True, timeout=30)
            lines = {line["line"]: line for line in json.loads(status.stdout)["lines"]}
            decided = {name: line["decided_by"]["human"] + line["decided_by"]["model"] for name, line in lines.items()}
        assert healthy, "the app never answered"
        assert set(decided) == {"line-1", "line-2"} and min(decided.values()) >= 5, f"phones were not inspected and decided on both lines: {decided}"
        for line in lines.values():
            assert line["worker_alive"] and line["active_model"] == shipped_model_dir.name, line
            assert line["server_alive"] and line["model_status"].startswith("ok"), line
    finally:
        product.send_signal(signal.SIGTERM)
        output = product.communicate(timeout=60)[0].decode()
    assert product.returncode == 0, output
    assert "restarting" not in output
    assert "no answer from the service" not in output, "the stations started before the service answered: their first phones were diverted"
    leftovers = subprocess.run(["pgrep", "-f", f"--server.port {port}"], capture_output=True, text=True).stdout
    assert not leftovers.strip(), "the app process outlived `up`"
    after = json.loads(subprocess.run(cli("status", "--json"), env=env, capture_output=True, text=True, timeout=30).stdout)["lines"][0]
    assert (after["server_alive"], after["server_status"]) == (False, "stopped"), "the service shut down cleanly and said so"


def test_a_child_that_keeps_dying_young_waits_longer_each_time_and_starts_over_once_stable():
    from core.supervisor import MAX_RESTART_PAUSE_SECONDS, RESTART_PAUSE_SECONDS, STABLE_SECONDS, _Restarts

    restarts = _Restarts()
    clock, pauses = 0.0, []
    for _ in range(7):  # dies one second after each start
        restarts.started(clock)
        clock += 1
        pauses.append(restarts.pause_after_exit(clock))
        clock += pauses[-1]
    assert pauses == [RESTART_PAUSE_SECONDS * 2**i for i in range(5)] + [MAX_RESTART_PAUSE_SECONDS] * 2
    restarts.started(clock)
    assert restarts.pause_after_exit(clock + STABLE_SECONDS) == RESTART_PAUSE_SECONDS, "a child that ran a while is restarted quickly again"


@pytest.mark.parametrize(
    ("processes", "cpus", "threads"),
    [
        (2, 2, 1),  # this machine: the worker and the service get one core each
        (2, 16, 8),
        (3, 16, 5),
        (4, 2, 1),  # never 0 (0 would mean every core to onnxruntime)
        (0, 8, 8),
    ],
)
def test_each_detector_process_gets_its_share_of_the_cores(processes, cpus, threads):
    from core.supervisor import detector_threads

    assert detector_threads(processes, cpus) == threads

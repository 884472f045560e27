"""``shadowline up``: the whole product on one machine, for a first look or a small plant.

Initialises the database, then runs the child processes: the worker, the inspection service
(``shadowline serve``), a simulated camera station per line that posts each phone to the service
and acts on the answer with a simulated reject gate (``shadowline station``, with a key made for
it), and the Streamlit app. The demonstration runs two lines, line-1 and line-2 (added with the
shipped model if missing), so the plant's views, the line selector and per-line keys have
something to show. A worker, service or station that dies is restarted after a pause (2 s,
doubling up to a minute while it keeps dying within a minute of its start; the worker's
unfinished phones are reclaimed when their leases expire); a station that finishes (exit 0) is
not; if the app dies, or on Ctrl-C / SIGTERM, everything is stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from core.settings import PROJECT_ROOT, get_settings

APP_ENTRYPOINT = PROJECT_ROOT / "app" / "asgi.py"  # st.App: the sign-in routes and gate around app/main.py
RESTART_PAUSE_SECONDS = 2.0


#: A child that ran at least this long before dying starts over from the first pause.
STABLE_SECONDS = 60.0
MAX_RESTART_PAUSE_SECONDS = 60.0


class _Restarts:
    """When to restart one child: ``RESTART_PAUSE_SECONDS``, doubling up to a minute while it keeps dying young."""

    def __init__(self) -> None:
        self.pause = RESTART_PAUSE_SECONDS
        self.since = 0.0

    def started(self, now: float) -> None:
        self.since = now

    def pause_after_exit(self, now: float) -> float:
        if now - self.since >= STABLE_SECONDS:
            self.pause = RESTART_PAUSE_SECONDS
        pause = self.pause
        self.pause = min(MAX_RESTART_PAUSE_SECONDS, self.pause * 2)
        return pause


def detector_threads(processes: int, cpus: int | None = None) -> int:
    """onnxruntime threads for each of ``processes`` detector processes on this machine: its share of the cores, at least 1."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, processes))


#: How long the stations wait for the service to answer ready before they start anyway.
STATIONS_WAIT_SECONDS = 120.0


def _service_ready(url: str) -> bool:
    """Whether the inspection service at ``url`` answers ``/readyz`` with 200 (models loaded, database reachable)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "core.cli", *args]


SERVICE_PORT = 8600
DEMO_STATION = "demo-camera"
#: The lines ``up`` simulates: the first is ``init``'s, the second is added with the same model.
DEMO_LINES = ("line-1", "line-2")
_UP_ACTOR = "shadowline-up"


def _demo_station_keys(database) -> dict[str, str]:  # noqa: ANN001
    """A fresh key for the demo station of each demo line, adding the lines that are missing.

    The previous run's keys are revoked; everything is audited. A missing line gets the first
    line's active model, in shadow mode as every new line.
    """
    from db import locks
    from db.api_keys import ApiKeyError, create_key, revoke_key
    from db.lines import add_line, find_line

    keys = {}
    with database.write() as session:
        locks.advisory_xact_lock(session=session, name=locks.INIT)  # two `up`s at once add each line once
        first = find_line(session=session, name=DEMO_LINES[0])
        for name in DEMO_LINES:
            if find_line(session=session, name=name) is None:
                add_line(session=session, name=name, actor=_UP_ACTOR, active_model_id=first.active_model_id if first else None)
            with contextlib.suppress(ApiKeyError):  # none yet on a first run
                revoke_key(session=session, key_ref=DEMO_STATION, line_name=name, actor=_UP_ACTOR)
            _, keys[name] = create_key(session=session, line_name=name, name=DEMO_STATION, actor=_UP_ACTOR)
    return keys


def run_product(
    *,
    port: int = 8501,
    scenario: str = "normal",
    rate: float = 2.0,
    simulate: bool = True,
    address: str = "127.0.0.1",
    service_port: int = SERVICE_PORT,
    review_wait: float = 30.0,
) -> int:
    """Run until interrupted; returns the exit code.

    ``review_wait``: on every line but the first, the demo station's simulated inspector judges a
    diverted phone only after it has waited this long, so a person signing in finds the newest
    phones in the Review queue (which stays about ``rate x review_wait`` phones long however long
    nobody judges). The first line's phones are judged at once, so its Live line shows verdicts.
    """
    from db.bootstrap import initialize, open_database
    from db.engine import safe_url

    settings = get_settings()
    database = open_database(settings, migrate=True)  # `up` is `init` and then the processes
    report = initialize(database, settings)
    station_keys = _demo_station_keys(database) if simulate else {}
    database.dispose()
    if report.model_problem:
        print(f"warning: {report.model_problem}; phones will be routed to people", file=sys.stderr)
    lines = list(dict.fromkeys([*report.lines, *station_keys]))
    print(f"Shadowline: database {safe_url(settings.database_url)}, model {report.model_version}, lines {', '.join(lines)}")
    if report.admin_password:
        print(f"First admin created: user 'admin', password '{report.admin_password}' (shown this once; add people with `shadowline users add`)")

    # The worker and the service each run onnxruntime: each gets its share of the cores, so that
    # their thread pools do not fight over them (both at every core measured slower on 2 cores).
    threads = str(detector_threads(2))
    commands = {
        "worker": _cli("worker", "--threads", threads),
        "service": _cli("serve", "--port", str(service_port), "--address", address, "--detector-threads", threads),
        "app": [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP_ENTRYPOINT),
            "--server.port",
            str(port),
            "--server.address",
            address,
            "--server.headless",
            "true",
            "--browser.gatherUsageStats",
            "false",
            "--browser.serverAddress",
            "localhost",
        ],
    }
    service_url = f"http://{'127.0.0.1' if address in ('0.0.0.0', '::') else address}:{service_port}"
    #: Environment of a child beyond the common one (each station's key).
    child_env: dict[str, dict[str, str]] = {}
    if simulate:
        seed = int(time.time())  # new serials each run: a serial posted again is a station's retry, answered as before
        for offset, (line, key) in enumerate(station_keys.items()):
            name = f"station {line}"
            station = ["--url", service_url, "--line", line, "--scenario", scenario, "--rate", str(rate), "--seed", str(seed + offset)]
            station += ["--inspector-wait", str(review_wait if offset else 0.0)]
            commands[name] = _cli("station", *station, "--name", DEMO_STATION)
            child_env[name] = {"SHADOWLINE_API_KEY": key}
    children: dict[str, subprocess.Popen[bytes]] = {}
    restarts = {name: _Restarts() for name in commands}
    waiting: dict[str, float] = {}  # child name -> when to start it again
    stopping = False

    def _stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    env = dict(os.environ)
    if simulate:
        # The demonstration's line is judged by the simulated inspector: its gates count those judgements
        # (said on the Automation page), unless the environment says otherwise.
        env.setdefault("SHADOWLINE_GATES_COUNT_SIMULATED", "true")
    # The stations wait for the service to answer ready: started at once, their first phones found nobody
    # listening and went to the hold station (Connection refused). They start anyway after a while, as a
    # real station would post to a service that is not there, and divert.
    stations_due = time.monotonic() + STATIONS_WAIT_SECONDS
    awaiting_service = set(child_env)

    def start(name: str) -> None:
        children[name] = subprocess.Popen(commands[name], cwd=Path(PROJECT_ROOT), env={**env, **child_env.get(name, {})})
        restarts[name].started(time.monotonic())

    for name in commands:
        if name not in awaiting_service:
            start(name)
    print(f"Open http://localhost:{port}; inspection service on port {service_port} (Ctrl-C stops everything)", flush=True)
    code = 0
    try:
        while not stopping:
            time.sleep(0.5)
            now = time.monotonic()
            for name, child in list(children.items()):
                status = child.poll()
                if status is None or stopping:  # children get Ctrl-C too: no restarts while stopping
                    continue
                if name == "app":
                    print(f"the app exited with {status}; stopping", file=sys.stderr)
                    code = status or 1
                    stopping = True
                    break
                del children[name]
                if name in child_env and status == 0:  # a station posted all it was asked to
                    continue
                # Every other child (worker, service, station) is restarted after a pause that doubles
                # while it keeps dying young, so a crash loop never spins; the others go on meanwhile.
                pause = restarts[name].pause_after_exit(now)
                waiting[name] = now + pause
                print(f"{name} exited with {status}; restarting it in {pause:.0f} s", file=sys.stderr, flush=True)
            if awaiting_service and not stopping and (time.monotonic() >= stations_due or _service_ready(service_url)):
                for name in sorted(awaiting_service):
                    start(name)
                awaiting_service.clear()
            for name, due in list(waiting.items()):
                if not stopping and time.monotonic() >= due:
                    del waiting[name]
                    start(name)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for child in children.values():
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
    return code

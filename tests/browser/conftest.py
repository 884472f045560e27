"""Browser tests: the real app served on 127.0.0.1, driven by Playwright in Debian's Chromium.

Playwright cannot download its own browser here; ``.ci/run`` installs Debian's ``chromium``.
Screenshots of each page are saved under ``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.camera import get_scenario
from core.line_simulator import SimulatedInspector, simulate_line
from core.settings import PROJECT_ROOT, SHIPPED_MODEL_VERSION, load_settings
from core.vocabulary import Role
from core.worker import Worker
from db.bootstrap import initialize, open_database
from db.lines import get_line
from db.users import add_user

CHROMIUM = os.environ.get("SHADOWLINE_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "screenshots"
PASSWORDS = {"sam": "supervisor-pass", "erin": "engineer-pass", "mo": "manager-pass", "ada": "admin-pass"}
ROLES = {"sam": Role.SUPERVISOR, "erin": Role.ENGINEER, "mo": Role.MANAGER, "ada": Role.ADMIN}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DRIFTING_LINE = "line-2"


def _seed_drifting_line(database, settings) -> None:
    """A second line whose lights went dim: phones drawn from the model's reference, then darkened, checked by the monitor."""
    import cv2

    from core.camera import render_run_phone
    from core.drift.metrics import DriftConfig
    from core.drift.monitor import DriftMonitor
    from core.drift.reference import load_model_reference, stratify
    from core.ingest import store_image_bytes
    from db import audit
    from db.lines import add_line
    from tests.drift_data import add_phones

    reference = stratify(load_model_reference(PROJECT_ROOT / "models" / SHIPPED_MODEL_VERSION), DriftConfig().reference_defect_rate)
    with database.write() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
        line_id = add_line(session=session, name=DRIFTING_LINE, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
    monitor = DriftMonitor(database)
    images: dict[float, list[str]] = {}
    for darken in (1.0, 0.7, 0.45):
        phones = [render_run_phone(get_scenario("normal"), 71, i).image for i in range(3)]
        encoded = [cv2.imencode(".jpg", (image * darken).astype("uint8"))[1].tobytes() for image in phones]
        images[darken] = [store_image_bytes(settings, DRIFTING_LINE, data, ".jpg")[0] for data in encoded]
    for seed, darken, phones in ((61, 1.0, 300), (62, 0.7, 200), (63, 0.45, 300)):
        add_phones(database, reference, phones, seed=seed, darken=darken, line_name=DRIFTING_LINE, images=images[darken])
        monitor.check(line_id)
        monitor.check(line_id)
    _seed_canary_request(database, reference, images[1.0])


PROMOTED_LINE = "line-3"


def _seed_canary_request(database, reference, images: list[str]) -> None:
    """A third line in partial automation with good evidence, and an engineer's request to move it into canary."""
    from core.auth import CurrentUser
    from core.ladder import actions
    from core.ladder.gates import Rung
    from core.vocabulary import AutomationLevel
    from db import audit
    from db.lines import add_line, set_level
    from tests.drift_data import add_phones

    actions.set_gates(database, CurrentUser("root", Role.ADMIN), assignments=["canary.min_pairs=100"], note="browser test")
    with database.write() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
        line_id = add_line(session=session, name=PROMOTED_LINE, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
        set_level(session=session, line_id=line_id, level=AutomationLevel.PARTIAL, actor="test")
    add_phones(database, reference, 300, seed=64, line_name=PROMOTED_LINE, images=images)
    actions.move(database, CurrentUser("erin", Role.ENGINEER), line_name=PROMOTED_LINE, to=Rung(AutomationLevel.CANARY, 0.05), note="300 phones agree")


@pytest.fixture(scope="package")
def served_env(tmp_path_factory) -> dict[str, str]:
    """The environment of the served installation (tests read its database through ``load_settings(served_env)``)."""
    root = tmp_path_factory.mktemp("browser")
    return dict(os.environ, SHADOWLINE_DATA_DIR=str(root / "data"), SHADOWLINE_MODELS_DIR=str(PROJECT_ROOT / "models"))


@pytest.fixture(scope="package")
def served_app(served_env):
    """A seeded installation and the app serving it; yields the base URL."""
    env = served_env
    settings = load_settings(env)
    database = open_database(settings)
    initialize(database, settings)
    with database.write() as session:
        for name, role in ROLES.items():
            add_user(session=session, name=name, role=role, password=PASSWORDS[name], actor="test")
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=14, rate=1000, seed=51, inspector=None)
    Worker(database, settings).run(until_empty=True)
    # A careless simulated inspector answers all but three phones: disagreements to open, phones to review.
    SimulatedInspector(miss_rate=0.5, false_reject_rate=0.3).answer_open_tasks(database, line_id=line.id, limit=11)
    _seed_drifting_line(database, settings)
    database.dispose()
    server, url = _serve(env)
    yield url
    server.terminate()
    server.wait(timeout=20)


def _serve(env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """Start the app on a free port; returns the process and its base URL once it answers."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(PROJECT_ROOT / "app" / "asgi.py"),
        "--server.address",
        "127.0.0.1",
        "--server.port",
        str(port),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
    ]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return server, url
        except OSError:
            time.sleep(0.5)
    server.kill()
    pytest.fail("the app did not start")


#: The running line's fixture feeds two lines: line-1 answered by the simulated inspector (phones worth
#: a label keep arriving), line-2 left to people (the review queue keeps filling).
REVIEW_LINE = "line-2"


@pytest.fixture(scope="package")
def running_line(tmp_path_factory):
    """A fresh installation with the worker and two simulated lines running *during* the test, and the app.

    One installation for the whole browser session: the modules that use it share it (starting one
    takes the worker, two simulators and the app).

    ``shadowline worker`` and ``shadowline simulate --rate 2 --count N`` run as subprocesses against the
    test's own data folder, bounded by their counts and stopped at the end. Yields the base URL and
    the environment (read the database through ``load_settings(env)``).
    """
    root = tmp_path_factory.mktemp("running-line")
    env = dict(os.environ, SHADOWLINE_DATA_DIR=str(root / "data"), SHADOWLINE_MODELS_DIR=str(PROJECT_ROOT / "models"), PYTHONUNBUFFERED="1")
    settings = load_settings(env)
    database = open_database(settings)
    initialize(database, settings)
    with database.write() as session:
        for name, role in ROLES.items():
            add_user(session=session, name=name, role=role, password=PASSWORDS[name], actor="test")
    database.dispose()
    cli = [sys.executable, "-m", "core.cli"]
    subprocess.run([*cli, "line", "add", REVIEW_LINE], env=env, check=True, capture_output=True, timeout=120)
    logs = root / "logs"
    logs.mkdir()
    feeds = {
        "worker": [*cli, "worker", "--threads", "1", "--batch-size", "4"],
        "line-1": [*cli, "simulate", "--line", "line-1", "--rate", "2", "--count", "500", "--seed", "81", "--miss-rate", "0.4", "--false-reject-rate", "0.2"],
        REVIEW_LINE: [*cli, "simulate", "--line", REVIEW_LINE, "--rate", "2", "--count", "300", "--seed", "82", "--inspector", "none"],
    }
    processes = [
        subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=(logs / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
        for name, command in feeds.items()
    ]
    server, url = _serve(env)
    try:
        yield url, env
    finally:
        for process in [server, *processes]:
            process.terminate()
        for process in [server, *processes]:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def screen_page(browser):
    """A page at 1440x900, the size the walk of the floor was done at."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture(scope="package")
def browser():
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: install Debian's chromium (.ci/run does) or set SHADOWLINE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
        )
        yield instance
        instance.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def sign_in(page, url: str | None, name: str) -> None:
    """Sign in as ``name`` (opening ``url`` first unless None)."""
    if url is not None:
        page.goto(url)
    page.get_by_role("textbox", name="User name").fill(name)
    page.get_by_role("textbox", name="Password").fill(PASSWORDS[name])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text(f"{name} · ").wait_for(timeout=20_000)


def screenshot(page, name: str) -> None:
    """Save a full-page screenshot as ``test-artifacts/screenshots/<name>.png`` (``name`` may hold a folder: ``ROLE/PAGE``)."""
    path = ARTIFACTS / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)
    page.screenshot(path=str(path), full_page=True)


def pick(page, combobox: str, option: str | None = None) -> None:
    """Choose an option of a Streamlit selectbox (the first one when ``option`` is None).

    A dropdown opened while the page is still finishing its run closes on the re-render: try again.
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    for _attempt in range(5):
        page.get_by_role("combobox", name=combobox).click()
        choice = page.get_by_role("option", name=option) if option else page.get_by_role("option").first
        try:
            choice.click(timeout=4_000)
            return
        except PlaywrightTimeoutError:
            page.keyboard.press("Escape")
    pytest.fail(f"the list {combobox!r} never opened")

"""The inspection service through a PostgreSQL restart, over a real socket.

While the server is down every phone still gets an answer at once: the line's fail-safe
(``database_busy``), never ``pass``; /readyz says not ready; once the server is back every phone
posted is in the database exactly once, with the answer the gate was given.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from sqlalchemy import func, select

from core.vocabulary import AutomationLevel
from db.lines import get_line, set_level
from db.models import GateAnswer, Inspection
from tests.conftest import postgres_stopped as stopped
from tests.server.conftest import phone_jpeg, serving

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

PHONES = 36


def _until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout  # a hang guard, not a timing
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_phones_posted_through_a_database_restart_get_the_failsafe_and_are_written_once(database, service, key, postgres_server) -> None:
    with database.write() as session:
        set_level(session=session, line_id=get_line(session=session, name="line-1").id, level=AutomationLevel.PARTIAL, actor="test")
    images = [phone_jpeg(i) for i in range(PHONES)]
    answers: dict[str, tuple[int, dict]] = {}
    with serving(service) as url, httpx.Client(base_url=url, timeout=60) as client:
        _until(lambda: client.get("/readyz").status_code == 200, 120, "the service never got ready")

        def camera() -> None:  # the station: one phone after another, whatever happens to the database
            for i in range(PHONES):
                serial = f"SN-R-{i:03d}"
                response = client.post(
                    "/v1/lines/line-1/inspections",
                    headers={"Authorization": f"Bearer {key}"},
                    files={"image": ("phone.jpg", images[i], "image/jpeg")},
                    data={"serial": serial},
                )
                answers[serial] = (response.status_code, response.json())
                time.sleep(0.05)

        station = threading.Thread(target=camera)
        station.start()
        try:
            _until(lambda: len(answers) >= 6, 120, "no phone answered before the restart")
            with stopped(postgres_server):
                down_from = len(answers)
                ready = client.get("/readyz")
                assert ready.status_code == 503 and ready.json()["checks"]["database"].startswith("unreachable"), ready.json()
                _until(lambda: len(answers) >= down_from + 6, 60, "phones posted while the database was down got no answer")
            station.join(timeout=300)
        finally:
            station.join(timeout=300)
        _until(lambda: client.get("/readyz").status_code == 200, 60, "not ready again after the restart")
        assert service.unrecorded.wait_empty(60), f"{len(service.unrecorded)} phones still waiting to be written"
        # The station retries a phone it got the fail-safe for: the same phone, with the answer it got.
        retried = next(serial for serial, (_, body) in answers.items() if body["failsafe"] == "database_busy")
        index = int(retried.rsplit("-", 1)[1])
        again = client.post(
            "/v1/lines/line-1/inspections",
            headers={"Authorization": f"Bearer {key}"},
            files={"image": ("phone.jpg", images[index], "image/jpeg")},
            data={"serial": retried},
        ).json()
        assert again["replayed"] and (again["action"], again["failsafe"]) == ("to_person", "database_busy"), again

    assert len(answers) == PHONES and {status for status, _ in answers.values()} == {200}, answers
    failsafes = {serial: body for serial, (_, body) in answers.items() if body["failsafe"]}
    assert any(body["failsafe"] == "database_busy" for body in failsafes.values()), "no phone was answered while the database was down"
    for serial, (_, body) in answers.items():
        assert body["action"] != "pass" or (body["decided_by"] == "model" and body["failsafe"] is None), (serial, body)
        if body["failsafe"]:
            assert body["action"] == "to_person" and body["decided_by"] == "person", (serial, body)

    with database.read() as session:
        rows = dict(session.execute(select(Inspection.serial, func.count()).group_by(Inspection.serial)).all())
        stored = {row.serial: (row.action, row.failsafe) for row in session.scalars(select(GateAnswer))}
    assert rows == {serial: 1 for serial in answers}, "every posted phone once, none lost, none twice"
    assert stored == {serial: (body["action"], body["failsafe"]) for serial, (_, body) in answers.items()}, "the database says what the gate was told"


def _serve(settings, port: int):
    import subprocess

    from tests.conftest import cli, cli_env

    return subprocess.Popen(
        cli("serve", "--port", str(port), "--address", "127.0.0.1"), env=cli_env(settings), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def test_phones_answered_while_the_database_was_away_are_written_by_the_next_start_when_the_service_was_killed(database, settings, key, postgres_server):
    """`shadowline serve` SIGKILLed while it holds phones it answered with the fail-safe during an
    outage: the next start finds them in the data folder's journal and writes each once."""
    import signal
    import socket

    from core.server.service import BACKLOG_FOLDER
    from db.lines import set_answer_settings

    with database.write() as session:
        set_answer_settings(session=session, line_id=get_line(session=session, name="line-1").id, actor="test", budget_ms=10_000)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    journal = settings.data_dir / BACKLOG_FOLDER
    serials = [f"SN-K-{i:03d}" for i in range(4)]
    first = _serve(settings, port)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            def post(serial: str, index: int) -> dict:
                files = {"image": ("phone.jpg", phone_jpeg(index), "image/jpeg")}
                return client.post("/v1/lines/line-1/inspections", headers={"Authorization": f"Bearer {key}"}, files=files, data={"serial": serial}).json()

            _until(ready, 180, "the service never got ready")
            assert post("SN-K-before", 99)["failsafe"] is None  # the key is known to the service now
            with stopped(postgres_server):
                answers = {serial: post(serial, i) for i, serial in enumerate(serials)}
                assert {(a["action"], a["failsafe"]) for a in answers.values()} == {("to_person", "database_busy")}, answers
                assert len(list(journal.glob("*.json"))) == len(serials), "each kept phone is on disk before the service can die"
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(timeout=30)
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Inspection).where(Inspection.serial.in_(serials))) == 0, "nothing written before the restart"
    second = _serve(settings, port)
    try:

        def written() -> int:
            with database.read() as session:
                return session.scalar(select(func.count()).select_from(GateAnswer).where(GateAnswer.serial.in_(serials))) or 0

        _until(lambda: written() == len(serials), 180, "the next start did not write the kept phones")
        _until(lambda: not list(journal.glob("*.json")), 30, "the journal still holds written phones")
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=60)
    with database.read() as session:
        rows = dict(session.execute(select(Inspection.serial, func.count()).where(Inspection.serial.in_(serials)).group_by(Inspection.serial)).all())
        stored = {row.serial: (row.action, row.failsafe, row.decided_by) for row in session.scalars(select(GateAnswer).where(GateAnswer.serial.in_(serials)))}
    assert rows == dict.fromkeys(serials, 1)
    assert stored == dict.fromkeys(serials, ("to_person", "database_busy", "person"))

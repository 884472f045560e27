"""The line as it runs: 200 phones posted over a real socket while the worker inspects files, the app
refreshes the Live line, a person judges the diverted phones and blue/green switches and rolls back.

Every posted phone ends with exactly one final decision, every answer follows the routing policy of
the moment it was given (canary share, the version active then), and no phone was passed without the
model or a person judging it. Bounded: every thread has a deadline and the test stops by itself.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
from sqlalchemy import select

from core.auth import CurrentUser
from core.camera import get_scenario
from core.deployment import rollback, set_candidate, switch
from core.line_simulator import queue_simulated_phone
from core.routing import share_draw
from core.vocabulary import Role, Verdict
from core.worker import Worker
from db.lines import get_line, update_settings
from db.models import AuditEntry, FinalDecision, HumanDecision, Inspection, ModelVersion, Prediction, ReviewTask
from db.reviews import claim_next_task, record_human_decision
from tests.app.conftest import app_for  # noqa: F401 - the Live line's AppTest, shared
from tests.server.conftest import phone_jpeg, serving
from tests.test_blue_green import green  # noqa: F401 - a second loadable version, shared

PHONES = 200
FILE_PHONES = 12
CANARY_SHARE = 0.5
CLIENTS = 3
DEADLINE_SECONDS = 420
MANAGER = CurrentUser("mo", Role.MANAGER)
SUPERVISOR = CurrentUser("sam", Role.SUPERVISOR)


def _judge_open_tasks(database, stop: threading.Event | None = None) -> int:
    """A person at the review station: judges every open task (a fixed rule standing in for their eye)."""
    judged = 0
    while stop is None or not stop.is_set():
        with database.write() as session:
            item = claim_next_task(session=session, reviewer="sam")
            if item is None:
                if stop is None:
                    return judged
            else:
                verdict = Verdict.REJECT if item.inspection_id % 3 == 0 else Verdict.PASS
                record_human_decision(session=session, task_id=item.task_id, reviewer="sam", verdict=verdict)
                judged += 1
                continue
        stop.wait(0.1)
    return judged


def test_200_phones_over_the_socket_with_the_worker_the_app_a_person_and_a_switch(database, settings, service, key, green, app_for):  # noqa: F811
    deadline = time.monotonic() + DEADLINE_SECONDS
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        update_settings(session=session, line_id=line.id, actor="test", level="canary", canary_share=CANARY_SHARE)
    set_candidate(database, MANAGER, line_name="line-1", version=green)  # green runs in shadow beside blue
    images = [phone_jpeg(i) for i in range(PHONES)]  # each its own photograph: a repeated one is a frozen camera's
    scenario = get_scenario("normal")
    for i in range(FILE_PHONES):  # phones that come as files, for the worker, at the same time
        queue_simulated_phone(database, settings, line_id=line.id, line_name=line.name, scenario=scenario, seed=515, index=i)

    worker = Worker(database, settings, worker_id="under-load", batch_size=4)
    worker_thread = threading.Thread(target=worker.run, kwargs={"poll_seconds": 0.1, "max_seconds": DEADLINE_SECONDS}, daemon=True)
    stop_person = threading.Event()
    person = threading.Thread(target=_judge_open_tasks, args=(database, stop_person), daemon=True)
    answers: dict[str, tuple[datetime, datetime, dict]] = {}
    answered = threading.Semaphore(0)

    with serving(service) as url:
        deadline_ready = time.monotonic() + 120
        while httpx.get(f"{url}/readyz").status_code != 200:
            assert time.monotonic() < deadline_ready, "the service never became ready"
            time.sleep(0.2)
        worker_thread.start()
        person.start()

        def station(first: int) -> None:
            with httpx.Client(base_url=url, timeout=60) as http:
                for i in range(first, PHONES, CLIENTS):
                    if time.monotonic() > deadline:
                        return
                    serial = f"LOAD-{i:03d}"
                    sent = datetime.now(UTC)
                    response = http.post(
                        "/v1/lines/line-1/inspections",
                        headers={"Authorization": f"Bearer {key}"},
                        files={"image": ("phone.jpg", images[i], "image/jpeg")},
                        data={"serial": serial},
                    )
                    assert response.status_code == 200, response.text
                    answers[serial] = (sent, datetime.now(UTC), response.json())
                    answered.release()

        app_runs = 0
        with ThreadPoolExecutor(CLIENTS) as clients:
            posting = [clients.submit(station, first) for first in range(CLIENTS)]
            at = app_for()
            at.session_state["auth.user"] = SUPERVISOR
            switched = rolled_back = False
            while not all(f.done() for f in posting):
                assert time.monotonic() < deadline, f"only {len(answers)} of {PHONES} phones answered in time"
                at.run()  # the Live line refreshes while phones arrive
                assert not at.exception, at.exception
                app_runs += 1
                if not switched and len(answers) >= PHONES // 3:
                    assert switch(database, MANAGER, line_name="line-1", note="green under load").applied
                    switched = True
                if switched and not rolled_back and len(answers) >= 2 * PHONES // 3:
                    rollback(database, SUPERVISOR, line_name="line-1", note="back to blue under load")
                    rolled_back = True
            for future in posting:
                future.result()
        assert switched and rolled_back and app_runs >= 2
        assert service.wait_for_upkeep(timeout=60)

    # The worker drains its files; then the person judges whatever still waits.
    while time.monotonic() < deadline:
        with database.read() as session:
            waiting = session.scalar(select(Inspection.id).where(Inspection.status.in_(("queued", "processing"))).limit(1))
        if waiting is None:
            break
        time.sleep(0.2)
    worker.stop()
    stop_person.set()
    worker_thread.join(timeout=60)
    person.join(timeout=60)
    assert not worker_thread.is_alive() and not person.is_alive()
    _judge_open_tasks(database)

    assert len(answers) == PHONES
    with database.read() as session:
        versions = {version: model_id for version, model_id in session.execute(select(ModelVersion.version, ModelVersion.id))}
        changes = [
            (entry.at, entry.after["active_model_id"])
            for entry in session.scalars(select(AuditEntry).where(AuditEntry.entity == "line").order_by(AuditEntry.id))
            if entry.after and "active_model_id" in entry.after
        ]
        inspections = {i.serial: i for i in session.scalars(select(Inspection).where(Inspection.line_id == line.id))}
        finals = {f.inspection_id: f for f in session.scalars(select(FinalDecision))}
        predictions = {(p.inspection_id, p.model_version_id): p for p in session.scalars(select(Prediction))}
        judged_by_person = set(session.scalars(select(HumanDecision.inspection_id)))
        open_tasks = session.scalars(select(ReviewTask.inspection_id).where(ReviewTask.status != "done")).all()
    assert not open_tasks, f"{len(open_tasks)} phones still wait for a person"
    assert len(inspections) == PHONES + FILE_PHONES, "one inspection per serial: no phone lost, none doubled"
    assert all(i.id in finals for i in inspections.values()), "every phone, posted or filed, has its final decision"

    def active_between(start: datetime, end: datetime) -> set[int]:
        """The versions active at some moment while a phone was in flight (a switch may fall inside)."""
        before = [model for at, model in changes if at <= start]
        during = [model for at, model in changes if start < at <= end]
        return {*(before[-1:] or [versions["scratch-v2"]]), *during}

    decided_by_version: dict[int, int] = {}
    for serial, (sent, received, answer) in answers.items():
        inspection = inspections[serial]
        final = finals[inspection.id]
        assert answer["inspection_id"] == inspection.id and answer["level"] == "canary", answer
        assert answer["failsafe"] is None or answer["action"] in ("to_person", "reject"), answer
        if answer["decided_by"] == "model":
            # The model's share by the serial's draw, from the version active at that moment, as its prediction said.
            assert answer["rule"] == "canary_model_share" and share_draw(serial, "canary") < CANARY_SHARE, answer
            model_id = versions[answer["model_version"]]
            assert model_id in active_between(sent, received), f"{serial} decided by {answer['model_version']}, not active then"
            assert predictions[(inspection.id, model_id)].verdict == answer["action"] == final.verdict, answer
            assert (final.decided_by, final.model_version_id) == ("model", model_id)
            decided_by_version[model_id] = decided_by_version.get(model_id, 0) + 1
        else:
            assert answer["action"] != "pass", f"{serial} passed with nobody judging it: {answer}"
            if answer["failsafe"] is None:
                assert answer["rule"] in ("canary_human_share", "not_admitted"), answer
                assert answer["rule"] == "not_admitted" or share_draw(serial, "canary") >= CANARY_SHARE, answer
            assert final.decided_by == "human" and inspection.id in judged_by_person, f"{serial}: a person's verdict is its final decision"
    assert len(decided_by_version) == 2, f"both versions decided phones while the line ran: {decided_by_version}"
    for inspection in inspections.values():  # filed phones too: a pass is always someone's judgement
        final = finals[inspection.id]
        if final.verdict == "pass":
            judged = (inspection.id, final.model_version_id) in predictions if final.decided_by == "model" else inspection.id in judged_by_person
            assert judged, f"{inspection.serial} passed with nobody judging it"

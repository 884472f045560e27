"""The inspection service in-process and over a real socket (the ``client`` fixture runs each test both ways):
actions per level, fail-safes, idempotency, keys, 4xx, readiness, metrics, the cursor."""

from __future__ import annotations

import hashlib
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from core.inspection import Inspector
from core.routing import failsafe_in_words
from core.server.service import InspectionService
from core.vocabulary import Verdict
from db import audit
from db.api_keys import revoke_key
from db.corrections import correct_decision
from db.lines import add_line, get_line, set_answer_settings, update_settings
from db.models import AuditEntry, FinalDecision, GateAnswer, Inspection, Prediction, ReviewTask, Routing
from db.reviews import claim_next_task, record_human_decision
from tests.server.conftest import make_key, open_client, phone_jpeg, post

#: The smallest audit share the tests set: 0 is refused (people always audit full automation), and the
#: serials these tests expect decided by the model alone draw well above it (routing.share_draw).
NO_AUDIT = 0.01


def wait_ready(client, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, client.get("/readyz").json()
        time.sleep(0.1)


def set_line(database, **changes) -> None:
    with database.write() as session:
        line = get_line(session=session, name="line-1")
        update_settings(session=session, line_id=line.id, actor="test", **changes)


def wait_written(database, inspection_id: int, seconds: float = 30.0) -> None:
    """Until the job behind a fail-safe answer has written the phone (it goes on after the answer)."""
    deadline = time.monotonic() + seconds
    while True:
        with database.read() as session:
            if session.get(Routing, inspection_id) is not None:
                return
        assert time.monotonic() < deadline
        time.sleep(0.05)


def count(database, model) -> int:
    with database.read() as session:
        return int(session.scalar(select(func.count()).select_from(model)))


@pytest.mark.parametrize(
    ("level", "changes", "action", "decided_by", "rule"),
    [
        # shadow: a person decides; the model runs and is logged, never shown
        ("shadow", {}, "to_person", "person", "shadow_human"),
        ("human_only", {}, "to_person", "person", "human_only_human"),
        # canary: the model decides its share (all of it here), people the rest (SN-canary draws 0.095, outside a 5 % share;
        # a share of 0 is refused since intake's checks)
        ("canary", {"canary_share": 1.0}, None, "model", "canary_model_share"),
        ("canary", {"canary_share": 0.05}, "to_person", "person", "canary_human_share"),
        # full: the model decides; the audit sample also goes to a person
        ("full", {"audit_share": NO_AUDIT}, None, "model", "full_model"),
        ("full", {"audit_share": 1.0}, None, "model", "full_audit_sample"),
    ],
)
def test_every_level_answers_by_its_policy(client, key, database, level, changes, action, decided_by, rule):
    wait_ready(client)
    set_line(database, level=level, **changes)
    answer = post(client, key, f"SN-{level}", phone_jpeg(3)).json()
    assert (answer["decided_by"], answer["rule"], answer["level"], answer["failsafe"]) == (decided_by, rule, level, None)
    with database.read() as session:
        final = session.get(FinalDecision, answer["inspection_id"])
        predictions = session.scalars(select(Prediction).where(Prediction.inspection_id == answer["inspection_id"])).all()
        task = session.scalar(select(ReviewTask).where(ReviewTask.inspection_id == answer["inspection_id"]))
    if decided_by == "model":
        assert answer["action"] == final.verdict and final.decided_by == "model" and answer["model_version"] == "scratch-v2"
    else:
        assert answer["action"] == action and final is None and task.kind == "decide"
    assert len(predictions) == (0 if level == "human_only" else 1)  # shadow: the model is logged
    assert (task is not None and task.kind == "audit") == (rule == "full_audit_sample") or decided_by == "person"


@pytest.mark.parametrize("failsafe_action", ["to_person", "reject"])
def test_missing_model_gives_the_failsafe_never_pass(client, key, database, service, failsafe_action, monkeypatch):
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="admin", failsafe_action=failsafe_action)
    monkeypatch.setattr(service.inspector, "_slot", lambda model_id: None)  # the model cannot be loaded
    answer = post(client, key, "SN-nomodel").json()
    assert (answer["action"], answer["failsafe"], answer["decided_by"]) == (failsafe_action, "model_unavailable", "person")
    assert service.wait_for_upkeep(timeout=30)  # the step-down runs after the answer
    with database.read() as session:
        assert session.get(FinalDecision, answer["inspection_id"]) is None
        assert session.scalar(select(ReviewTask.kind).where(ReviewTask.inspection_id == answer["inspection_id"])) == "decide"
        assert get_line(session=session, name="line-1").level.value == "shadow"  # the line whose model failed stepped down


def test_unreadable_image_is_stored_and_gets_the_failsafe(client, key, database):
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    truncated = phone_jpeg(1)[:300]  # a JPEG's start: an image, but not a readable one
    answer = post(client, key, "SN-broken", truncated).json()
    assert (answer["action"], answer["failsafe"]) == ("to_person", "image_unreadable")
    with database.read() as session:
        inspection = session.get(Inspection, answer["inspection_id"])
        assert inspection.status == "failed" and "truncated" in inspection.error
        assert session.get(FinalDecision, answer["inspection_id"]) is None


def test_exceeded_budget_answers_the_failsafe_and_the_late_model_answer_never_decides(client, key, database, service):
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="admin", budget_ms=1, failsafe_action="reject")
    answer = post(client, key, "SN-late", phone_jpeg(5)).json()
    # Under load the 1 ms may run out while the phone waits to be recorded (counted as the database's doing past 50 ms).
    reason = answer["failsafe"]
    assert (answer["action"], answer["decided_by"]) == ("reject", "person") and reason in ("budget_exceeded", "database_busy")
    # At 1 ms the phone may not even be recorded yet when the gate is answered; it is found by serial afterwards.
    deadline = time.monotonic() + 30
    while (found := client.get("/v1/lines/line-1/inspections", headers={"Authorization": f"Bearer {key}"}, params={"serial": "SN-late"})).status_code == 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    inspection_id = found.json()["inspection_id"]
    assert answer["inspection_id"] in (None, inspection_id)
    wait_written(database, inspection_id)
    with database.read() as session:
        routing = session.get(Routing, inspection_id)
        stored = session.get(GateAnswer, inspection_id)
        assert routing.decider == "human" and routing.rule == f"failsafe_{reason}"
        assert session.get(FinalDecision, inspection_id) is None  # the model's late verdict decided nothing
        assert session.scalar(select(func.count()).select_from(Prediction).where(Prediction.inspection_id == inspection_id)) == 1  # but it is kept
        assert (stored.action, stored.failsafe) == ("reject", reason)
    # The station retries with time to spare (at 1 ms a busy machine may time out the lookup itself):
    # the retry gets the answer the gate already acted on, not the model's late verdict.
    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="admin", budget_ms=5000, failsafe_action="reject")
    again = post(client, key, "SN-late", phone_jpeg(5)).json()
    assert (again["action"], again["inspection_id"], again["failsafe"], again["replayed"]) == ("reject", inspection_id, reason, True)


def test_concurrent_retries_are_one_phone_with_one_answer(client, key, database):
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    answers = []

    def send() -> None:
        answers.append(post(client, key, "SN-retry", phone_jpeg(7)).json())

    threads = [threading.Thread(target=send) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({(a["inspection_id"], a["action"], a["rule"]) for a in answers}) == 1, answers
    assert sum(not a["replayed"] for a in answers) == 1
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Inspection).where(Inspection.serial == "SN-retry")) == 1
        assert session.scalar(select(func.count()).select_from(FinalDecision)) == 1


def test_with_the_image_store_full_a_retry_keeps_its_answer_and_a_new_phone_gets_the_failsafe(client, key, database, monkeypatch):
    """A full disk cannot take the image: a serial already answered is answered as before; a new one
    gets the fail-safe (never a pass) and is recorded without its image, for a person."""
    import core.server.service as service_module
    from core.ingest import StorageError

    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    first = post(client, key, "SN-before-full", phone_jpeg(2)).json()
    assert first["failsafe"] is None and first["decided_by"] == "model"

    def full(*_args, **_kwargs):
        raise StorageError("cannot store the image in data/images: no space left on device")

    monkeypatch.setattr(service_module, "store_image_bytes", full)
    retry = post(client, key, "SN-before-full", phone_jpeg(2)).json()
    assert (retry["inspection_id"], retry["action"], retry["rule"], retry["replayed"]) == (first["inspection_id"], first["action"], first["rule"], True)
    new = post(client, key, "SN-after-full", phone_jpeg(3)).json()
    assert new["action"] == "to_person" and new["failsafe"] == "image_not_stored", new
    assert count(database, Inspection) == 2
    with database.read() as session:
        phone = session.get(Inspection, new["inspection_id"])
        task = session.scalar(select(ReviewTask).where(ReviewTask.inspection_id == phone.id))
        routing = session.get(Routing, phone.id)
        answer = session.get(GateAnswer, phone.id)
    assert phone.serial == "SN-after-full" and phone.image_path.startswith("not-stored/") and phone.image_sha256 == hashlib.sha256(phone_jpeg(3)).hexdigest()
    assert task is not None and task.kind == "decide" and routing.decider == "human" and "image store" in failsafe_in_words(answer.failsafe)
    assert (answer.action, answer.failsafe) == ("to_person", "image_not_stored")
    again = post(client, key, "SN-after-full", phone_jpeg(3)).json()
    assert (again["inspection_id"], again["action"], again["failsafe"], again["replayed"]) == (new["inspection_id"], "to_person", "image_not_stored", True)


def test_keys_are_scoped_to_their_line_and_revocable(client, key, database):
    with database.write() as session:
        add_line(session=session, name="line-2", actor="test", active_model_id=1)
    other = make_key(database, "line-2", "station-2")
    refused = post(client, other, "SN-x", line="line-1")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "forbidden"
    with database.write() as session:
        revoke_key(session=session, key_ref="station-1", line_name="line-1", actor="admin")
        assert audit.search(session=session, action_prefix="api_key.")[1] == 3  # two made, one revoked
    revoked = post(client, key, "SN-y")
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "unauthorized"
    assert count(database, Inspection) == 0


@pytest.mark.parametrize(
    ("case", "status", "code"),
    [
        ("no image", 400, "no_image"),
        ("not an image", 415, "not_an_image"),
        ("empty image", 400, "no_image"),
        ("no serial", 400, "bad_request"),
        ("unknown line", 404, "unknown_line"),
        ("no key", 401, "unauthorized"),
        ("bad key", 401, "unauthorized"),
        ("key without Bearer", 401, "unauthorized"),
        ("no key, no image", 401, "unauthorized"),
        ("200 MB body", 413, "body_too_large"),
        ("30 MB chunked body", 413, "body_too_large"),
    ],
)
def test_bad_requests_get_a_json_4xx_and_change_nothing(client, key, database, service, transport, case, status, code):
    headers = {"Authorization": f"Bearer {key}"}
    url = "/v1/lines/line-1/inspections"
    image = {"image": ("phone.jpg", phone_jpeg(0), "image/jpeg")}
    if case == "no image":
        response = client.post(url, headers=headers, data={"serial": "S1"})
    elif case == "not an image":
        response = client.post(url, headers=headers, files={"image": ("notes.txt", b"hello, not a phone", "text/plain")}, data={"serial": "S1"})
    elif case == "empty image":
        response = client.post(url, headers=headers, files={"image": ("phone.jpg", b"", "image/jpeg")}, data={"serial": "S1"})
    elif case == "no serial":
        response = client.post(url, headers=headers, files=image)
    elif case == "unknown line":
        response = client.post("/v1/lines/line-9/inspections", headers=headers, files=image, data={"serial": "S1"})
    elif case == "no key":
        response = client.post(url, files=image, data={"serial": "S1"})
    elif case == "no key, no image":  # the key is checked first, though the form is parsed before the handler
        response = client.post(url, data={"serial": "S1"})
    elif case == "key without Bearer":
        response = client.post(url, headers={"Authorization": key}, files=image, data={"serial": "S1"})
        assert "'Bearer KEY'" in response.json()["error"]["message"]
    elif case == "bad key":
        response = client.post(url, headers={"Authorization": "Bearer slk_00000000_" + "x" * 43}, files=image, data={"serial": "S1"})
    elif case == "30 MB chunked body":  # no Content-Length: refused once the body passes 25 MB, not 'an error parsing the body'
        head = (
            b'--x\r\nContent-Disposition: form-data; name="serial"\r\n\r\nS1\r\n--x\r\nContent-Disposition: form-data; name="image"; filename="big.jpg"\r\n\r\n'
        )

        def chunks():
            yield head
            for _ in range(30):
                yield b"\xff" * (1024 * 1024)

        response = client.post(url, headers={**headers, "Content-Type": "multipart/form-data; boundary=x"}, content=chunks())
    elif transport == "in_process":
        response = client.post(
            url, headers={**headers, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(200 * 1024 * 1024)}, content=b"--x"
        )
    else:  # a real client announcing 200 MB: the refusal comes before the body is sent
        status_got, body = _announce_huge_body(str(client.base_url), url, headers)
        assert (status_got, json.loads(body)["error"]["code"]) == (status, code)
        assert count(database, Inspection) == 0 and count(database, GateAnswer) == 0
        _assert_refusal_kept(service, database, code if case != "unknown line" else None)
        return
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert count(database, Inspection) == 0 and count(database, GateAnswer) == 0
    _assert_refusal_kept(service, database, code if case != "unknown line" else None)


def _assert_refusal_kept(service, database, code: str | None) -> None:
    """The refused phone is counted for line-1's Live line (nothing else of it is kept); a post to no line is not."""
    from datetime import timedelta

    from core.server.service import REFUSED_WRITE_SECONDS
    from db.gate import refused_posts
    from db.models import utcnow

    service.write_refused_posts(now=time.monotonic() + REFUSED_WRITE_SECONDS)
    with database.read() as session:
        kept = refused_posts(session=session, line_id=1, since=utcnow() - timedelta(minutes=15))
    assert kept == ({code: 1} if code else {})


def _announce_huge_body(base_url: str, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST headers announcing a 200 MB multipart body, then only its first bytes; the service's status and body."""
    parsed = urlsplit(base_url)
    connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=30)
    try:
        connection.putrequest("POST", path)
        for name, value in {**headers, "Content-Type": "multipart/form-data; boundary=x", "Content-Length": str(200 * 1024 * 1024)}.items():
            connection.putheader(name, value)
        connection.endheaders(b"--x\r\n")
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_not_ready_until_the_model_is_loaded(database, settings, transport):
    loaded = threading.Event()

    class SlowInspector(Inspector):
        def load_models(self, lines):
            loaded.wait(30)
            super().load_models(lines)

    service = InspectionService(database, settings, SlowInspector(database, settings), threads=2)
    service.start_loading()
    try:
        with open_client(service, transport) as client:
            assert client.get("/healthz").status_code == 200
            response = client.get("/readyz")
            assert response.status_code == 503 and response.json()["checks"]["models"] == "loading"
            loaded.set()
            wait_ready(client)
            assert client.get("/readyz").json() == {"ready": True, "checks": {"database": "ok", "models": "ok"}}
    finally:
        loaded.set()
        service.close()


def test_metrics_text(client, key, database):
    wait_ready(client)
    post(client, key, "SN-m1")
    client.post("/v1/lines/line-1/inspections", data={"serial": "x"})
    text = client.get("/metrics").text
    for expected in (
        'shadowline_inspection_latency_seconds_bucket{le="0.3",line="line-1",model_version="scratch-v2"}',
        'shadowline_gate_actions_total{action="to_person",decided_by="person",line="line-1"} 1.0',
        "shadowline_failsafes_total",
        'shadowline_queue_depth{line="line-1"} 0.0',
        'shadowline_model_info{line="line-1",loaded="true",slot="blue",version="scratch-v2"} 1.0',
        "shadowline_rejected_requests_total",
    ):
        assert expected in text, expected
    assert client.get("/openapi.json").json()["paths"]["/v1/lines/{line}/inspections"]["post"]
    # /docs works on a box without internet: its files come from this service, not a CDN.
    import re

    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    for asset in assets:
        assert client.get(asset).status_code == 200, asset


def test_a_persons_verdict_reaches_the_line_through_the_cursor(client, key, database):
    wait_ready(client)
    headers = {"Authorization": f"Bearer {key}"}
    start = client.get("/v1/lines/line-1/decisions", headers=headers).json()
    assert start["decisions"] == []
    answer = post(client, key, "SN-hold").json()
    assert answer["action"] == "to_person" and answer["pending"]
    waiting = client.get(f"/v1/inspections/{answer['inspection_id']}", headers=headers).json()
    assert (waiting["pending"], waiting["model_slot"], waiting["final"]) == (True, answer["model_slot"], None)  # GET says what the POST said
    result = {}

    def follow() -> None:
        result["page"] = client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": start["cursor"], "wait": 20}).json()

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)
    with database.write() as session:
        item = claim_next_task(session=session, reviewer="sam")
        decision_id = record_human_decision(session=session, task_id=item.task_id, reviewer="sam", verdict=Verdict.REJECT)
    follower.join(30)
    [event] = result["page"]["decisions"]
    assert (event["inspection_id"], event["serial"], event["verdict"], event["decided_by"], event["gate_action"]) == (
        answer["inspection_id"],
        "SN-hold",
        "reject",
        "person",
        "to_person",
    )
    assert event["corrects"] is None
    record = client.get(f"/v1/inspections/{answer['inspection_id']}", headers=headers).json()
    assert record["final"]["verdict"] == "reject" and record["final"]["decided_by"] == "person" and record["final"]["corrected_at"] is None
    assert record["pending"] is False
    assert client.get("/v1/lines/line-1/inspections", headers=headers, params={"serial": "SN-hold"}).json()["inspection_id"] == answer["inspection_id"]
    after = client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": result["page"]["cursor"]}).json()
    assert after["decisions"] == []
    # A person's correction is a new row; the service reads the verdict as it stands, and a follower
    # that already acted on the phone gets the correction as an event of its own.
    followed = {}

    def follow_on() -> None:
        followed["page"] = client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": result["page"]["cursor"], "wait": 20}).json()

    follower = threading.Thread(target=follow_on)
    follower.start()
    time.sleep(0.5)
    with database.write() as session:
        correct_decision(session=session, human_decision_id=decision_id, actor="sam", verdict=Verdict.PASS, reason="the mark wipes off")
    follower.join(30)
    [correction] = followed["page"]["decisions"]
    assert (correction["serial"], correction["verdict"], correction["corrects"], correction["rule"], correction["decided_by"]) == (
        "SN-hold",
        "pass",
        "reject",
        "undo",  # within seconds of the verdict; later, with its reason, a 'correction'
        "person",
    )
    final = client.get(f"/v1/inspections/{answer['inspection_id']}", headers=headers).json()["final"]
    assert final["verdict"] == "pass" and final["corrected_at"] is not None and final["corrected_at"] > final["decided_at"]
    # Replayed from the start: the decision as it was given, then its correction; the last word is the verdict as it stands.
    replay = client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": start["cursor"]}).json()
    assert [(e["verdict"], e["corrects"]) for e in replay["decisions"]] == [("reject", None), ("pass", "reject")]
    assert client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": replay["cursor"]}).json()["decisions"] == []
    assert client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": "latest"}).json()["cursor"] == replay["cursor"]


def _jpeg(image) -> bytes:
    import cv2

    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return encoded.tobytes()


def test_the_admission_check_sends_frames_unlike_a_phone_to_a_person_at_full_automation(client, key, database):
    import numpy as np

    from core.camera import get_scenario, render_run_phone

    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    with database.write() as session:  # a refusal is a person's judgement, not the fail-safe: to_person even where that is reject
        set_answer_settings(session=session, line_id=1, actor="admin", failsafe_action="reject")
    lens_cap = render_run_phone(get_scenario("lens-cap"), 77, get_scenario("lens-cap").onset).image
    black = np.zeros((360, 480, 3), np.uint8)
    normal = post(client, key, "SN-normal", phone_jpeg(3)).json()
    images = {"SN-black": _jpeg(black), "SN-lens-cap": _jpeg(lens_cap), "SN-frozen": phone_jpeg(3)}  # frozen: the normal phone's very image again
    refused = {serial: post(client, key, serial, image).json() for serial, image in images.items()}

    assert (normal["decided_by"], normal["rule"], normal["failsafe"]) == ("model", "full_model", None)
    assert normal["action"] in ("pass", "reject")
    with database.read() as session:
        routing = session.get(Routing, normal["inspection_id"])
        final = session.get(FinalDecision, normal["inspection_id"])
        verdict = session.scalar(select(Prediction.verdict).where(Prediction.inspection_id == normal["inspection_id"], Prediction.is_candidate.is_(False)))
    assert routing.admitted is True and final.decided_by == "model" and normal["action"] == final.verdict == verdict

    for serial, answer in refused.items():
        assert (answer["action"], answer["decided_by"], answer["rule"], answer["failsafe"]) == ("to_person", "person", "not_admitted", None), serial
        with database.read() as session:
            routing = session.get(Routing, answer["inspection_id"])
            assert session.get(FinalDecision, answer["inspection_id"]) is None, serial
            assert session.scalar(select(ReviewTask.kind).where(ReviewTask.inspection_id == answer["inspection_id"])) == "decide", serial
        assert routing.admitted is False and routing.admission_reason and routing.admission_reason in answer["reason"], serial
        again = post(client, key, serial, images[serial]).json()  # the station's retry: the same answer, and why
        assert (again["action"], again["replayed"], again["reason"]) == ("to_person", True, answer["reason"]), serial
    assert routing.admission_check == "repeat" and "SN-normal" in refused["SN-frozen"]["reason"]


def test_a_run_of_refused_phones_raises_the_alarm_and_steps_the_line_down(client, key, database, settings, service):
    from core.camera import get_scenario, render_run_phone
    from core.vocabulary import AutomationLevel
    from db import drift as drift_db

    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    scenario = get_scenario("lens-cap")
    frames = [_jpeg(render_run_phone(scenario, 78, scenario.onset + i).image) for i in range(settings.admission_run_alarm)]
    answers = [post(client, key, f"SN-cap-{i}", frame).json() for i, frame in enumerate(frames)]
    assert {a["action"] for a in answers} == {"to_person"}
    assert service.wait_for_upkeep(timeout=30)  # the alarm and the step-down run after the answer
    with database.read() as session:
        assert get_line(session=session, name="line-1").level is AutomationLevel.SHADOW
        alarm = next(a for a in drift_db.current_alarms(session=session, line_id=1) if a.metric == "inadmissible_rate")
    assert alarm.severity == "severe" and "in a row" in alarm.reason
    assert post(client, key, "SN-after", phone_jpeg(4)).json()["rule"] == "shadow_human"


def _one_thread_service(database, settings, *, budget_ms: int) -> InspectionService:
    """A service inspecting one phone at a time, line-1's budget set to ``budget_ms``."""
    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="admin", budget_ms=budget_ms)
    service = InspectionService(database, settings, Inspector(database, settings, threads=2), threads=1)
    service.start_loading()
    return service


def _hold_inspections(service: InspectionService, held: threading.Event) -> None:
    """From now on every inspection waits for ``held`` (at most a minute) before it runs."""
    inspect = service.inspect

    def held_inspect(*args, **kwargs):
        held.wait(60)
        return inspect(*args, **kwargs)

    service.inspect = held_inspect


def test_an_overload_clears_phones_late_before_they_began_go_to_people_without_the_model(database, settings, key, transport):
    """One inspection thread, held: three phones wait past the budget. The one that starts while another still
    waits is stored for a person without the model; the last, with nobody behind it, is still inspected; the next
    phone after the overload is judged in time."""
    set_line(database, level="full", audit_share=NO_AUDIT)
    service, held = _one_thread_service(database, settings, budget_ms=1500), threading.Event()
    _hold_inspections(service, held)  # the first phone occupies the only thread until released
    answers: dict[str, dict] = {}
    try:
        with open_client(service, transport) as client:
            wait_ready(client)

            def send(serial: str, index: int) -> None:
                answers[serial] = post(client, key, serial, phone_jpeg(index)).json()

            senders = [threading.Thread(target=send, args=(f"SN-over-{i}", 10 + i)) for i in range(3)]
            for sender in senders:
                sender.start()
                time.sleep(0.3)  # in this order into the thread's queue
            for sender in senders:
                sender.join(60)
            held.set()
            assert service.wait_for_upkeep(timeout=60)
            service._pool.submit(lambda: None).result(60)  # the one thread has finished the late phones
            after = post(client, key, "SN-after-overload", phone_jpeg(20)).json()
    finally:
        held.set()
        service.close()
    assert {a["action"] for a in answers.values()} == {"to_person"}
    # The held phone ran out of time inspecting; the two behind it never got a thread: an overload, not a slow database.
    assert answers["SN-over-0"]["failsafe"] in ("budget_exceeded", "database_busy")
    assert answers["SN-over-1"]["failsafe"] == answers["SN-over-2"]["failsafe"] == "overloaded", answers
    assert (after["decided_by"], after["failsafe"]) == ("model", None)
    with database.read() as session:
        ids = {serial: session.scalar(select(Inspection.id).where(Inspection.serial == serial)) for serial in answers}
        predicted = {serial: session.scalar(select(func.count()).select_from(Prediction).where(Prediction.inspection_id == i)) for serial, i in ids.items()}
        for serial, inspection_id in ids.items():
            routing = session.get(Routing, inspection_id)
            assert routing.decider == "human" and routing.rule.startswith("failsafe_"), serial
            assert session.get(FinalDecision, inspection_id) is None, serial
            assert session.scalar(select(ReviewTask.kind).where(ReviewTask.inspection_id == inspection_id)) == "decide", serial
    # SN-over-0 held the thread (inspected, late); SN-over-1 started with SN-over-2 behind it: no model; SN-over-2 last: inspected.
    assert predicted == {"SN-over-0": 1, "SN-over-1": 0, "SN-over-2": 1}


def test_a_serial_conflict_found_after_the_failsafe_was_given_is_written_to_the_audit_log(database, settings, key, transport):
    """A second phone under a used serial, with another image, waits past its budget (one thread, held): the
    gate acts on the fail-safe before the conflict is found. It cannot be recorded under that serial, so the
    audit log says so, with the image it was posted with, instead of the phone vanishing without a word."""
    service, held = _one_thread_service(database, settings, budget_ms=500), threading.Event()
    try:
        with open_client(service, transport) as client:
            wait_ready(client)
            first = post(client, key, "SN-used", phone_jpeg(40)).json()
            _hold_inspections(service, held)  # the next phone occupies the only thread until released
            holder = threading.Thread(target=post, args=(client, key, "SN-holder", phone_jpeg(41)))
            holder.start()
            time.sleep(0.2)
            second = post(client, key, "SN-used", phone_jpeg(42))  # another phone, the same serial: waits past its budget
            held.set()
            holder.join(60)
            service._pool.submit(lambda: None).result(60)  # the second phone's job has run
    finally:
        held.set()
        service.close()
    assert first["failsafe"] is None
    assert second.status_code == 200 and second.json()["failsafe"] == "overloaded" and second.json()["action"] == "to_person"
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Inspection).where(Inspection.serial == "SN-used")) == 1
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.action == "station.serial_conflict")))
        assert len(entries) == 1, entries
        from datetime import timedelta

        from db.gate import unrecorded_conflicts
        from db.models import utcnow

        [shown] = unrecorded_conflicts(session=session, line_id=1, since=utcnow() - timedelta(hours=1))  # what the Live line shows
        assert shown.serial == "SN-used"
        after, note = entries[0].after, entries[0].note
    assert after["serial"] == "SN-used" and after["image_sha256"] == hashlib.sha256(phone_jpeg(42)).hexdigest()
    assert settings.image_file(after["image_path"]).is_file()  # the phone's image is kept, named in the entry
    assert "not in the Review queue" in note


def test_a_phone_that_cannot_be_inspected_in_what_is_left_of_its_budget_gets_the_failsafe_at_once(database, settings, key, transport):
    """Under overload, a phone with too many phones ahead of it to be answered in time (how many wait, and how
    long a phone takes now: the median of the last) gets the fail-safe as it arrives; one that gets its thread
    with less time left than a phone takes gets it then. Both are stored for a person, without the model
    while others wait: their cores go to the next phones instead of to answers too late to count."""
    set_line(database, level="full", audit_share=NO_AUDIT)
    budget_ms = 2000
    service = _one_thread_service(database, settings, budget_ms=budget_ms)
    inspect = service.inspect

    def slow_inspect(*args, **kwargs):
        time.sleep(0.6)  # a slow inspection, always: four phones fill the budget of the last
        return inspect(*args, **kwargs)

    service.inspect = slow_inspect
    answers: dict[str, dict] = {}
    try:
        with open_client(service, transport) as client:
            wait_ready(client)
            first = post(client, key, "SN-alone", phone_jpeg(30)).json()  # alone: inspected, and now an inspection's time is known

            def send(serial: str, index: int) -> None:
                answers[serial] = post(client, key, serial, phone_jpeg(index)).json()

            senders = [threading.Thread(target=send, args=(f"SN-burst-{i}", 31 + i)) for i in range(8)]
            for sender in senders:
                sender.start()
                time.sleep(0.05)
            for sender in senders:
                sender.join(60)
            assert service.wait_for_upkeep(timeout=60)
            service._pool.submit(lambda: None).result(60)
    finally:
        service.close()
    assert first["decided_by"] == "model" and first["failsafe"] is None
    assert len(answers) == 8 and {a["action"] for a in answers.values()} <= {"pass", "reject", "to_person"}
    shed = {serial for serial, a in answers.items() if a["failsafe"] == "overloaded" and a["latency_ms"] < budget_ms}
    assert shed, answers  # before this, every late phone was inspected and answered when its budget ran out
    # Too many phones ahead of it to answer in time: the fail-safe the moment it arrives, not at the deadline.
    assert any(answers[serial]["latency_ms"] < budget_ms / 4 for serial in shed), answers
    inspected_anyway = 0
    with database.read() as session:
        for serial, answer in answers.items():
            inspection_id = session.scalar(select(Inspection.id).where(Inspection.serial == serial))
            assert inspection_id is not None, serial  # every phone is stored
            predictions = session.scalar(select(func.count()).select_from(Prediction).where(Prediction.inspection_id == inspection_id))
            if answer["failsafe"] is not None:
                assert answer["action"] == "to_person" and answer["decided_by"] == "person", answer
                assert session.scalar(select(ReviewTask.kind).where(ReviewTask.inspection_id == inspection_id)) == "decide", serial
                assert session.get(FinalDecision, inspection_id) is None, serial
            if serial in shed:
                assert session.get(Routing, inspection_id).rule == "failsafe_overloaded", serial
                inspected_anyway += predictions
    # The model ran for none of them, but for the last whose turn came with nobody behind it (its boxes for the person).
    assert inspected_anyway <= 1
    assert len(shed) < 8  # the phones before them were inspected


def test_the_served_detector_uses_every_core_without_spinning_and_finds_what_the_worker_finds(database, settings) -> None:
    """``shadowline serve``'s defaults (core/server/run.py): phones at once share the cores, so onnxruntime's
    idle threads sleep instead of spin-waiting; the worker's spinning detector sees the same boxes."""
    import os

    import numpy as np

    from core.server.run import build_service
    from db.lines import get_line
    from tests.server.conftest import phone_jpeg

    service = build_service(settings)
    try:
        assert service._ready.wait(120), "the models never loaded"
        with database.read() as session:
            model_id = get_line(session=session, name="line-1").active_model_id
        served = service.inspector.detector(model_id)
        assert served is not None
        options = served._predictor._session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
        assert options.intra_op_num_threads == (os.cpu_count() or 1)
        if (os.cpu_count() or 1) > 1:  # a phone that starts while another is inspected takes one thread
            assert served._predictor._narrow is not None
        worker = Inspector(database, settings, threads=1)
        spinning = worker.detector(model_id)
        assert spinning is not None
        with pytest.raises(RuntimeError, match="allow_spinning"):  # not set: onnxruntime's default, spinning
            spinning._predictor._session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
        found = [(served.detect(phone_jpeg(i)), spinning.detect(phone_jpeg(i))) for i in range(10)]
        assert any(len(a.xyxy) for a, _ in found), "no scratch found on ten phones: the comparison would be empty"
        for a, b in found:
            assert np.array_equal(a.class_id, b.class_id)
            assert np.allclose(a.xyxy, b.xyxy, atol=0.5) and np.allclose(a.confidence, b.confidence, atol=1e-3)
    finally:
        service.close()


def test_phones_written_together_share_one_upkeep_round(client, key, database, service, monkeypatch):
    """The upkeep after the answer takes the phones written within its gathering time as one batch: its reads
    (drift counts, the run of refusals) are paid once for all of them, and every phone is still counted."""
    import core.server.service as service_module

    wait_ready(client)
    assert service.wait_for_upkeep(timeout=60)  # the catch-up round at start
    monkeypatch.setattr(service_module, "UPKEEP_GATHER_SECONDS", 10.0)  # ample on a busy machine; the test waits for it once

    def upkeep_totals() -> tuple[float, float]:
        rounds = next(s.value for m in service.metrics.upkeep.collect() for s in m.samples if s.name.endswith("_count"))
        phones = next(s.value for m in service.metrics.upkeep_phones.collect() for s in m.samples if s.name.endswith("_total"))
        return rounds, phones

    rounds_before, phones_before = upkeep_totals()
    answers: list[dict] = []
    senders = [threading.Thread(target=lambda i=i: answers.append(post(client, key, f"SN-together-{i}", phone_jpeg(40 + i)).json())) for i in range(4)]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(120)
    assert len(answers) == 4 and all(a["inspection_id"] for a in answers)
    assert service.wait_for_upkeep(timeout=60)
    rounds, phones = upkeep_totals()
    assert (rounds - rounds_before, phones - phones_before) == (1, 4)


def test_a_serial_posted_again_with_another_image_is_refused_not_replayed(client, key, database):
    """A retry sends the same image; another picture under a serial the line has is another phone
    (a duplicated label, a phone come round again): 409, never the first phone's answer."""
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    first = post(client, key, "SN-twice", phone_jpeg(11))
    assert first.status_code == 200 and first.json()["decided_by"] == "model"
    other = post(client, key, "SN-twice", phone_jpeg(12))
    assert other.status_code == 409
    error = other.json()["error"]
    assert error["code"] == "serial_conflict" and "another image" in error["message"] and str(first.json()["inspection_id"]) in error["message"]
    retry = post(client, key, "SN-twice", phone_jpeg(11)).json()
    assert (retry["inspection_id"], retry["action"], retry["replayed"]) == (first.json()["inspection_id"], first.json()["action"], True)
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Inspection).where(Inspection.serial == "SN-twice")) == 1
    # The POST's latency is the one recorded with the answer: GET tells the gate's figure again.
    record = client.get(f"/v1/inspections/{first.json()['inspection_id']}", headers={"Authorization": f"Bearer {key}"}).json()
    assert record["latency_ms"] == first.json()["latency_ms"]


def test_concurrent_posts_of_one_serial_with_different_images_give_one_phone_and_a_conflict(client, key, database):
    wait_ready(client)
    set_line(database, level="full", audit_share=NO_AUDIT)
    answers = []

    def send(seed: int) -> None:
        answers.append(post(client, key, "SN-clash", phone_jpeg(seed)))

    threads = [threading.Thread(target=send, args=(seed,)) for seed in (21, 21, 22, 22)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert codes == [200, 200, 409, 409], [a.json() for a in answers]
    assert len({a.json()["inspection_id"] for a in answers if a.status_code == 200}) == 1
    with database.read() as session:
        assert session.scalar(select(func.count()).select_from(Inspection).where(Inspection.serial == "SN-clash")) == 1


def test_a_long_poll_answers_at_once_when_the_server_stops(client, key, service):
    """A hold station's 20 s long-poll must not hold a stopping service: it gets its page and cursor at once."""
    headers = {"Authorization": f"Bearer {key}"}
    service.is_stopping = lambda: True
    started = time.monotonic()
    page = client.get("/v1/lines/line-1/decisions", headers=headers, params={"after": "latest", "wait": 20}).json()
    assert time.monotonic() - started < 5 and page["decisions"] == [] and page["cursor"]


def test_a_long_lived_service_freezes_what_it_loaded_so_full_collections_stay_short(database, settings) -> None:
    """``serve`` asks for it: once the models are loaded, everything alive is out of the collector's sight (gc.freeze)."""
    import gc

    gc.unfreeze()
    service = InspectionService(database, settings, Inspector(database, settings, threads=1), threads=1, freeze_after_load=True)
    try:
        service.start_loading()
        assert service._ready.wait(120), "the models never loaded"
        assert service.inspector.detector(_active_model_id(database)) is not None
        assert gc.get_freeze_count() > 10_000  # the libraries, the model and the app: a few hundred thousand objects
    finally:
        gc.unfreeze()  # this is a test's process: give its objects back to the collector
        service.close()
    plain = InspectionService(database, settings, Inspector(database, settings, threads=1), threads=1)
    try:
        plain.start_loading()
        assert plain._ready.wait(120)
        assert gc.get_freeze_count() == 0
    finally:
        plain.close()


def _active_model_id(database) -> int:
    from db.lines import get_line

    with database.read() as session:
        model_id = get_line(session=session, name="line-1").active_model_id
    assert model_id is not None
    return model_id


def test_the_server_parses_http_in_c_when_installed_as_packaged() -> None:
    """``httptools`` is a dependency: uvicorn's default ('auto') then parses requests with it, not with h11 (pure Python)."""
    import uvicorn

    async def app(scope, receive, send) -> None:
        raise AssertionError("not called")

    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


def test_refused_posts_are_written_at_once_then_at_most_once_a_minute_and_on_close(client, key, database, service):
    """A station refused all day leaves about a line a minute in the audit log, not one per phone; the first refusal
    after a quiet spell is written at once, and what is counted when the service stops is written then."""
    from datetime import timedelta

    from core.server.service import REFUSED_WRITE_SECONDS
    from db.gate import refused_posts
    from db.models import utcnow

    def refuse() -> None:
        response = client.post("/v1/lines/line-1/inspections", files={"image": ("p.jpg", phone_jpeg(0), "image/jpeg")}, data={"serial": "S1"})
        assert response.status_code == 401

    def written() -> tuple[dict[str, int], int]:
        with database.read() as session:
            entries = session.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "station.refused_posts"))
            return refused_posts(session=session, line_id=1, since=utcnow() - timedelta(minutes=15)), entries

    refuse()
    service.write_refused_posts()
    assert written() == ({"unauthorized": 1}, 1)
    refuse()
    refuse()
    service.write_refused_posts()  # within the minute: kept counting
    assert written() == ({"unauthorized": 1}, 1)
    service.write_refused_posts(now=time.monotonic() + REFUSED_WRITE_SECONDS)
    assert written() == ({"unauthorized": 3}, 2)
    refuse()
    service.close()
    assert written() == ({"unauthorized": 4}, 3)


def test_a_post_without_a_station_is_the_keys_station_and_a_serial_is_found_as_it_was_stored(client, key, database):
    """The station is the key's name unless the form names one; GET by serial trims it as the post did."""
    headers = {"Authorization": f"Bearer {key}"}
    wait_ready(client)
    posted = post(client, key, "  SN-trim  ").json()
    named = post(client, key, "SN-named", phone_jpeg(1), station="cam-B").json()
    record = client.get("/v1/lines/line-1/inspections", headers=headers, params={"serial": " SN-trim "}).json()
    assert (record["inspection_id"], record["serial"], record["station"]) == (posted["inspection_id"], "SN-trim", "station-1")
    assert client.get(f"/v1/inspections/{named['inspection_id']}", headers=headers).json()["station"] == "cam-B"

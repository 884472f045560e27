"""Fixtures of the inspection service: a service over a fresh installation, keys, phones as JPEG bytes."""

from __future__ import annotations

import cv2
import pytest
from fastapi.testclient import TestClient

from core.camera import get_scenario, render_run_phone
from core.inspection import Inspector
from core.server.app import create_app
from core.server.service import InspectionService
from db.api_keys import create_key


def phone_jpeg(index: int, *, scenario: str = "normal", seed: int = 4242) -> bytes:
    image = render_run_phone(get_scenario(scenario), seed, index).image
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return encoded.tobytes()


def make_key(database, line: str = "line-1", name: str = "station-1") -> str:
    with database.write() as session:
        _, key = create_key(session=session, line_name=line, name=name, actor="test")
    return key


@pytest.fixture
def service(database, settings):
    # A generous budget: these tests check behaviour, not speed, on a machine shared with other work.
    from db.lines import set_answer_settings

    with database.write() as session:
        set_answer_settings(session=session, line_id=1, actor="test", budget_ms=10_000)
    svc = InspectionService(database, settings, Inspector(database, settings, threads=2, admission_target_rate=settings.admission_target_rate), threads=4)
    svc.start_loading()
    yield svc
    svc.close()


@pytest.fixture
def client(service):
    with TestClient(create_app(service)) as test_client:
        yield test_client


@pytest.fixture
def key(database) -> str:
    return make_key(database)


def post(client, key: str, serial: str, image: bytes | None = None, *, line: str = "line-1", **fields):
    files = {"image": ("phone.jpg", image if image is not None else phone_jpeg(0), "image/jpeg")}
    return client.post(f"/v1/lines/{line}/inspections", headers={"Authorization": f"Bearer {key}"}, files=files, data={"serial": serial, **fields})

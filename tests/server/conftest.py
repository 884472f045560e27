"""Fixtures of the inspection service: a service over a fresh installation, keys, phones as JPEG bytes.

``client`` is the service through each transport the line may meet: in-process (Starlette's test
client, no network) and over a real socket (uvicorn on 127.0.0.1, a free port, an httpx client), so
every behaviour test runs both ways without being written twice.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import cv2
import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from core.camera import get_scenario, render_run_phone
from core.inspection import Inspector
from core.server.app import create_app
from core.server.service import InspectionService
from db.api_keys import create_key

TRANSPORTS = ("in_process", "socket")


def phone_jpeg(index: int, *, scenario: str = "normal", seed: int = 4242) -> bytes:
    image = render_run_phone(get_scenario(scenario), seed, index).image
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return encoded.tobytes()


def make_key(database, line: str = "line-1", name: str = "station-1") -> str:
    with database.write() as session:
        _, key = create_key(session=session, line_name=line, name=name, actor="test")
    return key


@contextmanager
def serving(service: InspectionService) -> Iterator[str]:
    """The service on uvicorn, 127.0.0.1 on a free port, in a thread; yields its base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(service), log_level="warning", access_log=False, lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


@contextmanager
def open_client(service: InspectionService, transport: str) -> Iterator[httpx.Client]:
    """A client of ``service``: Starlette's in-process test client, or a real HTTP client over a socket."""
    if transport == "in_process":
        with TestClient(create_app(service)) as test_client:
            yield test_client
    else:
        with serving(service) as url, httpx.Client(base_url=url, timeout=60) as http_client:
            yield http_client


@pytest.fixture(params=TRANSPORTS)
def transport(request) -> str:
    return str(request.param)


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
def client(service, transport):
    with open_client(service, transport) as opened:
        yield opened


@pytest.fixture
def key(database) -> str:
    return make_key(database)


def post(client, key: str, serial: str, image: bytes | None = None, *, line: str = "line-1", **fields):
    files = {"image": ("phone.jpg", image if image is not None else phone_jpeg(0), "image/jpeg")}
    return client.post(f"/v1/lines/{line}/inspections", headers={"Authorization": f"Bearer {key}"}, files=files, data={"serial": serial, **fields})

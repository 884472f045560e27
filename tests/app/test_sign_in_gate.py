"""The HTTP side of signing in (app/gate.py): the form, the cookie, and the gate in front of every page load.

Served in-process over Starlette's test client, on a real installation; the browser tests run the same through
``streamlit run app/asgi.py``.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from core import settings as settings_module
from core.auth import SESSION_COOKIE
from core.vocabulary import Role
from db.models import AuditEntry
from db.users import add_user


@pytest.fixture
def client(database, settings, monkeypatch):
    monkeypatch.setenv("SHADOWLINE_DATA_DIR", str(settings.data_dir))
    if not settings.database_url.startswith("sqlite"):
        monkeypatch.setenv("SHADOWLINE_DATABASE_URL", settings.database_url)
    settings_module.get_settings.cache_clear()
    from app import gate

    gate.database.cache_clear()
    gate.secret.cache_clear()
    with database.write() as session:
        add_user(session=session, name="sam", role=Role.SUPERVISOR, password="line-one-pass", actor="admin")

    async def streamlit_page(request):  # stands in for Streamlit's index.html
        return PlainTextResponse("the page")

    app = Starlette(routes=[*gate.ROUTES, Route("/{path:path}", streamlit_page)], middleware=[Middleware(gate.SessionGate)])
    with TestClient(app, base_url="http://127.0.0.1:8501", follow_redirects=False) as test_client:
        yield test_client
    gate.database.cache_clear()
    settings_module.get_settings.cache_clear()


def _sign_in(client, next_path="/review", password="line-one-pass", **headers):
    return client.post("/signin", data={"name": "sam", "password": password, "next": next_path}, headers=headers)


def test_a_page_load_without_a_session_goes_to_sign_in_and_back_to_that_page(client, database):
    answer = client.get("/review?line=line-2")
    assert answer.status_code == 303 and answer.headers["location"] == "/signin?next=/review%3Fline%3Dline-2"
    for path in ("/_stcore/health", "/static/js/index.js", "/favicon.png", "/signin"):
        assert client.get(path).status_code == 200, f"{path} is not a page and is never gated"
    assert _sign_in(client, password="wrong-password").status_code == 401
    signed_in = _sign_in(client, next_path="/review?line=line-2")
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/review?line=line-2"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
    assert client.get("/review").text == "the page", "the cookie opens every page"
    assert client.get("/signin?next=/models").headers["location"] == "/models", "signed in already: straight on"
    with database.read() as session:
        actions = list(session.scalars(select(AuditEntry.action).where(AuditEntry.action.startswith("session."))))
    assert actions == ["session.sign_in_failed", "session.sign_in"]


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.example/review",  # protocol-relative: another site
        "https://evil.example/",  # absolute URL
        "/\\evil.example",  # backslash, read as a slash by browsers
        "/signin",  # a loop
        "review",  # not a path
    ],
)
def test_sign_in_never_sends_the_browser_to_another_site(client, next_path):
    assert _sign_in(client, next_path=next_path).headers["location"] == "/"


def test_a_forged_ended_or_cross_site_session_opens_nothing(client, database):
    client.cookies.set(SESSION_COOKIE, "made-up.signature")
    forged = client.get("/live")
    assert forged.status_code == 303 and f'{SESSION_COOKIE}=""' in forged.headers["set-cookie"], "the bad cookie is cleared"
    refused = _sign_in(client, origin="http://evil.example")
    assert refused.status_code == 403 and SESSION_COOKIE not in refused.headers.get("set-cookie", "")
    client.cookies.clear()
    cookie = _sign_in(client).cookies[SESSION_COOKIE]
    from app import gate
    from core.auth import unsign_session_token
    from db.sessions import end_by_token

    token = unsign_session_token(cookie, gate.secret())
    with database.write() as session:
        end_by_token(session=session, token=token)
    assert client.get("/live").status_code == 303, "signed out elsewhere: the next page load asks again"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_page_loaded_while_the_database_restarts_says_so_and_reloads_itself(client, postgres_server):
    from app.outage import DATABASE_DOWN
    from tests.conftest import postgres_stopped as stopped

    assert _sign_in(client).status_code == 303
    with stopped(postgres_server):
        answer = client.get("/review")
        assert answer.status_code == 503 and DATABASE_DOWN in answer.text and 'http-equiv="refresh"' in answer.text
        assert client.get("/signin").status_code == 503
        assert "sign in again in a moment" in _sign_in(client).text, "a sign-in is refused in one line, never sent again by itself"
    assert client.get("/review").text == "the page", "the reload after the restart opens the page, still signed in"

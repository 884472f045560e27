"""The HTTP side of signing in, mounted on Streamlit's ASGI app (``app/asgi.py``, ``st.App``).

- ``GET /signin`` shows the form; ``POST /signin`` checks the password, opens a session row and sets
  the session cookie (opaque token + HMAC signature, HttpOnly, SameSite=Lax, Secure over HTTPS),
  then sends the browser on to the page it asked for (``next``, a local path only).
- :class:`SessionGate` answers every page load (a bookmark, a reload, a second tab) without a valid
  session with a redirect to ``/signin?next=<that page>``, so a link opens its page after sign-in.

Streamlit's pages read the same cookie through ``st.context.cookies`` (``app/session.py``) on every
run, so a session ended anywhere (sign-out in another tab, an admin, the idle timeout) ends here too.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import quote, urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from core.auth import SESSION_COOKIE, load_session_secret, sign_session_token, unsign_session_token
from core.settings import get_settings
from db.bootstrap import open_database
from db.engine import Database, is_transient
from db.sessions import SessionPolicy, find_open, start_session, touch_session

SIGN_IN_PATH = "/signin"
_FORM = Template((Path(__file__).with_name("sign_in.html")).read_text(encoding="utf-8"))
#: Paths that are never a page: Streamlit's own routes and files, and the sign-in route itself.
_NOT_PAGES = ("/_stcore/", "/static/", "/media/", "/component/", "/app/static/", "/-/")


@cache
def database() -> Database:
    """The database of the HTTP routes, made once per process (the pages have their own, see app/state.py)."""
    return open_database(get_settings())


@cache
def secret() -> bytes:
    """The installation's key that signs session cookies."""
    return load_session_secret(get_settings().session_secret_file)


def policy() -> SessionPolicy:
    settings = get_settings()
    return SessionPolicy.from_minutes(idle_minutes=settings.session_idle_minutes, hours=settings.session_hours)


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this server (never another site, never the sign-in page), else ``/``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path == SIGN_IN_PATH:
        return "/"
    return target


def sign_in_url(next_path: str) -> str:
    """Where a visitor without a session is sent to reach ``next_path`` after signing in."""
    target = safe_next(next_path)
    return SIGN_IN_PATH if target == "/" else f"{SIGN_IN_PATH}?next={quote(target, safe='/')}"


def is_page(path: str) -> bool:
    """Whether a GET of ``path`` is a page of the app (Streamlit answers those with its index.html)."""
    if path == SIGN_IN_PATH or any(path.startswith(prefix) for prefix in _NOT_PAGES):
        return False
    return "." not in path.rsplit("/", 1)[-1]


def _form(*, next_path: str, name: str = "", error: str | None = None, notice: str | None = None, status: int = 200) -> HTMLResponse:
    message = ""
    if error:
        message = f'<div class="error" role="alert">{html.escape(error)}</div>'
    elif notice:
        message = f'<div class="notice" role="status">{html.escape(notice)}</div>'
    body = _FORM.substitute(message=message, next=html.escape(next_path, quote=True), name=html.escape(name, quote=True))
    return HTMLResponse(body, status_code=status, headers={"Cache-Control": "no-store"})


def _database_down() -> HTMLResponse:
    """One line while the database does not answer (a restart, a blip); the page reloads itself until it does."""
    from app.outage import DATABASE_DOWN, RETRY_SECONDS

    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="{RETRY_SECONDS}">'
        f'<title>Shadowline</title></head><body><p role="status">{html.escape(DATABASE_DOWN)}</p></body></html>'
    )
    return HTMLResponse(body, status_code=503, headers={"Cache-Control": "no-store", "Retry-After": str(RETRY_SECONDS)})


async def _ask(work: Any) -> Any:
    """Run a database unit off the event loop; a database that does not answer raises :class:`_DatabaseDown`."""
    try:
        return await run_in_threadpool(work)
    except Exception as error:
        if is_transient(error):
            raise _DatabaseDown from error
        raise


class _DatabaseDown(Exception):
    """The database did not answer (its error is the cause)."""


def _token(request: Request) -> str | None:
    return unsign_session_token(request.cookies.get(SESSION_COOKIE), secret())


def _clear_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")


async def sign_in_form(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    token = _token(request)
    if token is not None:

        def _lookup() -> bool:
            with database().read() as session:
                return find_open(session=session, token=token, policy=policy()) is not None

        try:
            if await _ask(_lookup):
                return RedirectResponse(next_path, status_code=303)
        except _DatabaseDown:
            return _database_down()
    notice = "You are signed out. Sign in again to go on." if request.cookies.get(SESSION_COOKIE) else None
    response = _form(next_path=next_path, notice=notice)
    if request.cookies.get(SESSION_COOKIE):
        _clear_cookie(response)  # an ended, expired or forged session: forget it
    return response


async def sign_in_submit(request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        # A form posted from another site (login CSRF): refuse, whatever the password.
        return _form(next_path="/", error="This sign-in came from another site and was refused.", status=403)
    form = await request.form()
    name = str(form.get("name") or "").strip()
    password = str(form.get("password") or "")
    next_path = safe_next(str(form.get("next") or "/"))
    client = request.headers.get("user-agent")
    address = request.client.host if request.client else None

    def _start() -> Any:
        with database().write() as session:
            return start_session(session=session, name=name, password=password, policy=policy(), client=client, address=address)

    try:
        result, started = await _ask(_start)
    except _DatabaseDown:  # not reloaded by itself: that would send the password again
        return _form(next_path=next_path, name=name, error="The database is not answering: sign in again in a moment.", status=503)
    if started is None:
        return _form(next_path=next_path, name=name, error=result.message, status=401)
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        sign_session_token(started.token, secret()),
        max_age=int(policy().lifetime.total_seconds()),
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    return response


ROUTES = [Route(SIGN_IN_PATH, sign_in_form, methods=["GET"]), Route(SIGN_IN_PATH, sign_in_submit, methods=["POST"])]


class SessionGate:
    """ASGI middleware: a page load without an open session goes to the sign-in form, keeping its path.

    Only page loads are gated here (GET of a path Streamlit answers with its index.html); the pages
    themselves check the session again on every run, and every action is checked by ``core.auth``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or not is_page(scope["path"]):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        token = _token(request)

        def _touch() -> bool:
            if token is None:
                return False
            with database().write() as session:
                return touch_session(session=session, token=token, policy=policy()) is not None

        try:
            touched = await _ask(_touch)
        except _DatabaseDown:
            await _database_down()(scope, receive, send)
            return
        if touched:
            await self.app(scope, receive, send)
            return
        path = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        response = RedirectResponse(sign_in_url(path), status_code=303, headers={"Cache-Control": "no-store"})
        if SESSION_COOKIE in request.cookies:
            _clear_cookie(response)
        await response(scope, receive, send)

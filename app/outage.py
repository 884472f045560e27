"""What the app shows while the database does not answer (a restart, a failover, a network blip).

One line instead of a traceback, and the page comes back by itself: a small fragment asks the
database every few seconds and reruns the whole page once it answers. ``app/main.py`` runs every
page inside :func:`guard_page`; a fragment that reruns on its own (``st.fragment(run_every=...)``)
runs outside it and wraps its body in :func:`rerun_when_database_down`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec

import streamlit as st

from app import state
from db.engine import is_transient

P = ParamSpec("P")

#: The one line a page shows while the database does not answer.
DATABASE_DOWN = "The database is not answering; retrying…"
#: How often a page that shows it asks the database again.
RETRY_SECONDS = 3


def database_answers() -> bool:
    """Whether the database answers now (a schema or other non-transient error is raised, not hidden)."""
    try:
        state.database().ping()
    except Exception as error:
        if is_transient(error):
            return False
        raise
    return True


@st.fragment(run_every=RETRY_SECONDS)
def _retry() -> None:
    if database_answers():
        st.rerun(scope="app")


def database_down_ui() -> None:
    """The line, and the fragment that brings the page back once the database answers."""
    st.warning(DATABASE_DOWN, icon=":material/database:")
    _retry()


def guard_page(run: Callable[[], None]) -> None:
    """Run a page; a database that stops answering on the way shows :data:`DATABASE_DOWN` instead of a traceback.

    Only transient errors (the server restarting, a dropped connection: :func:`db.engine.is_transient`)
    are caught; a bug still shows as one. What the page drew before the error stays above the line.
    """
    try:
        run()
    except Exception as error:
        if not is_transient(error):
            raise
        database_down_ui()


@contextmanager
def rerun_when_database_down() -> Iterator[None]:
    """For the body of a fragment that reruns by itself: a database that stops answering reruns the
    whole page, which then shows :data:`DATABASE_DOWN` (a fragment alone would show a traceback)."""
    try:
        yield
    except Exception as error:
        if not is_transient(error):
            raise
        st.rerun(scope="app")


def guarded(body: Callable[P, None]) -> Callable[P, None]:
    """:func:`rerun_when_database_down` as a decorator, under ``@st.fragment(run_every=...)``."""

    @functools.wraps(body)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        with rerun_when_database_down():
            body(*args, **kwargs)

    return run

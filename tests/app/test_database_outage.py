"""A page opened while PostgreSQL restarts: one line saying the database is not answering, then the page again.

On a real throw-away server, stopped and started (``pg_ctl stop -m immediate``, then ``start``).
"""

from __future__ import annotations

import pytest

from app.outage import DATABASE_DOWN
from core.auth import CurrentUser
from core.vocabulary import Role
from tests.conftest import postgres_stopped as stopped

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)


def test_a_page_says_the_database_is_not_answering_and_comes_back(database, app_for, postgres_server) -> None:
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("mo", Role.MANAGER)
    at.run()
    at.switch_page("../pages/automation.py").run()
    assert not at.exception and at.title[0].value == "Automation"

    with stopped(postgres_server):
        at.run()
        assert not at.exception, at.exception
        assert [w.value for w in at.warning] == [DATABASE_DOWN], "one line, nothing else to worry about"

    at.run()  # what the retry fragment does once the database answers: the page again, by itself
    assert not at.exception and DATABASE_DOWN not in [w.value for w in at.warning]
    assert at.title[0].value == "Automation"


def test_the_app_started_while_the_database_is_down_says_so(database, app_for, postgres_server) -> None:
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("mo", Role.MANAGER)
    with stopped(postgres_server):
        at.run()
        assert not at.exception, at.exception
        assert [w.value for w in at.warning] == [DATABASE_DOWN]
    at.run()
    assert not at.exception and not at.warning

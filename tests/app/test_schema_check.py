"""On PostgreSQL the app never migrates: before `shadowline migrate` it says so in one line, and works after it."""

from __future__ import annotations

import pytest

from db.migrate import upgrade


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_app_refuses_an_unmigrated_database_in_one_line_then_opens_after_migrate(app_for, empty_database) -> None:
    at = app_for().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["the database has no Shadowline schema yet: run `shadowline migrate` (or `shadowline init`) once, from one machine"]
    upgrade(empty_database.engine)
    at = app_for().run()
    assert not at.exception and not at.error
    assert at.title[0].value == "Signed out"  # the way to sign in (the form is served by app/gate.py)

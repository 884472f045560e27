"""The ladder on a real database: every move through the role matrix, requests and approvals, automatic rollback."""

from __future__ import annotations

import pytest

from core.auth import CurrentUser, PermissionDeniedError
from core.ladder import actions
from core.ladder.gates import LADDER, Rung
from core.vocabulary import AutomationLevel, Role
from db import audit
from db import ladder as ladder_db
from db.lines import get_line, update_settings
from tests.drift_data import add_phones

USERS = {role: CurrentUser(f"u-{role.value}", role) for role in Role}
ADMIN, MANAGER, ENGINEER, SUPERVISOR = USERS[Role.ADMIN], USERS[Role.MANAGER], USERS[Role.ENGINEER], USERS[Role.SUPERVISOR]
RUNG = {r.key: r for r in LADDER}


@pytest.fixture
def small_gates(database):
    """Gates that 60 agreeing phones meet (the real defaults need hundreds)."""
    assignments = [f"{key}.min_pairs=60" for key in RUNG if key != "human_only"]
    actions.set_gates(database, ADMIN, assignments=assignments, note="test")


def _put(database, key: str) -> None:
    rung = RUNG[key]
    changes: dict[str, object] = {"level": rung.level.value}
    if rung.share is not None:
        changes["canary_share"] = rung.share
    with database.write() as session:
        update_settings(session=session, line_id=get_line(session=session, name="line-1").id, actor="test", **changes)


def _rung(database) -> str:
    with database.read() as session:
        return actions.current_rung(get_line(session=session, name="line-1")).key


@pytest.mark.both_backends
@pytest.mark.parametrize("role", list(Role))
def test_anyone_moves_a_line_down_at_once(database, role) -> None:
    _put(database, "canary_50")
    outcome = actions.move(database, USERS[role], line_name="line-1", to=RUNG["shadow"], note="lights look wrong")
    assert outcome.applied and _rung(database) == "shadow"


@pytest.mark.parametrize(
    ("start", "target", "allowed"),
    [
        ("human_only", "shadow", {Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
        ("shadow", "assist", {Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
        ("assist", "partial", {Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
        ("canary", "canary_20", {Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER, Role.ADMIN}),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_moving_up_below_canary_needs_the_gate_only(database, drift_reference, small_gates, start, target, allowed, role) -> None:
    _put(database, start)
    add_phones(database, drift_reference, 400, seed=1)
    if role in allowed:
        assert actions.move(database, USERS[role], line_name="line-1", to=RUNG[target]).applied
        assert _rung(database) == target
    else:
        with pytest.raises(PermissionDeniedError):
            actions.move(database, USERS[role], line_name="line-1", to=RUNG[target])
        assert _rung(database) == start


@pytest.mark.parametrize(("start", "target"), [("partial", "canary"), ("canary_50", "full")])
@pytest.mark.parametrize("role", list(Role))
def test_canary_and_full_need_a_managers_approval(database, drift_reference, small_gates, start, target, role) -> None:
    _put(database, start)
    add_phones(database, drift_reference, 400, seed=2)
    user = USERS[role]
    if role is Role.ADMIN:
        with pytest.raises(PermissionDeniedError):
            actions.move(database, user, line_name="line-1", to=RUNG[target])
        return
    outcome = actions.move(database, user, line_name="line-1", to=RUNG[target], note="evidence is in")
    assert not outcome.applied and outcome.request_id is not None and _rung(database) == start
    with database.read() as session:
        request = ladder_db.get_request(session=session, request_id=outcome.request_id)
    assert request.requested_by == user.name and request.evidence["status"] == "met" and request.evidence["criteria"]
    for other in (Role.SUPERVISOR, Role.ENGINEER, Role.ADMIN):
        with pytest.raises(PermissionDeniedError):
            actions.approve(database, USERS[other], request_id=outcome.request_id)
    assert _rung(database) == start
    for silent in (None, "  "):  # an approval says why, for the audit log
        with pytest.raises(actions.LadderError, match="note"):
            actions.approve(database, MANAGER, request_id=outcome.request_id, note=silent)
    with database.read() as session:
        assert ladder_db.get_request(session=session, request_id=outcome.request_id).status == "pending"
    assert _rung(database) == start
    approved = actions.approve(database, MANAGER, request_id=outcome.request_id, note="go")
    assert approved.applied and _rung(database) == target
    with database.read() as session:
        assert ladder_db.get_request(session=session, request_id=outcome.request_id).status == "approved"
        frame, _ = audit.search(session=session, action_prefix="request.")
    assert {"request.level", "request.approved"} <= set(frame["action"])


def test_gates_refuse_skips_thin_evidence_and_bad_evidence(database, drift_reference, small_gates) -> None:
    _put(database, "shadow")
    with pytest.raises(actions.LadderError, match="one rung at a time"):
        actions.move(database, ENGINEER, line_name="line-1", to=RUNG["partial"])
    with pytest.raises(actions.LadderError, match="not enough evidence yet"):
        actions.move(database, ENGINEER, line_name="line-1", to=RUNG["assist"])  # no traffic: the gate waits
    add_phones(database, drift_reference, 100, seed=3, human_disagrees=0.4)
    with pytest.raises(actions.LadderError, match=r"the gate is not met.*agreement"):
        actions.move(database, ENGINEER, line_name="line-1", to=RUNG["assist"], note="looks fine to me")
    assert _rung(database) == "shadow"
    with database.read() as session:
        frame, _ = audit.search(session=session, action_prefix="line.move_refused")
    assert len(frame) == 2, "the gate's two refusals are audited (a skip of a rung is not: nothing was judged)"
    latest = frame.iloc[0]
    assert latest["actor"] == ENGINEER.name and latest["before"] == {"level": "shadow"}
    assert latest["after"]["level"] == "assist" and latest["after"]["gate"] == "not_met"
    assert "agreement" in latest["note"] and "their note: looks fine to me" in latest["note"]


@pytest.mark.both_backends
def test_refusing_needs_a_note_and_a_stale_request_cannot_be_approved(database, drift_reference, small_gates) -> None:
    _put(database, "partial")
    add_phones(database, drift_reference, 400, seed=4)
    first = actions.move(database, ENGINEER, line_name="line-1", to=RUNG["canary"]).request_id
    assert first is not None
    with pytest.raises(actions.LadderError, match="needs a note"):
        actions.refuse(database, MANAGER, request_id=first, note=" ")
    actions.refuse(database, MANAGER, request_id=first, note="wait for the night shift's numbers")
    with pytest.raises(ladder_db.RequestError, match="already refused"):
        actions.refuse(database, MANAGER, request_id=first, note="again")
    second = actions.move(database, ENGINEER, line_name="line-1", to=RUNG["canary"]).request_id
    assert second is not None
    actions.move(database, SUPERVISOR, line_name="line-1", to=RUNG["shadow"])
    with pytest.raises(actions.LadderError, match="obsolete"):
        actions.approve(database, MANAGER, request_id=second)
    with database.read() as session:
        assert ladder_db.get_request(session=session, request_id=second).status == "obsolete"
    assert _rung(database) == "shadow"


@pytest.mark.both_backends
def test_overrides_in_canary_roll_the_line_back_by_itself(database, drift_reference) -> None:
    _put(database, "canary_20")
    add_phones(database, drift_reference, 30, seed=5, human_disagrees=0.5)
    assert actions.check_rollbacks(database) == []  # too few phones: it waits
    add_phones(database, drift_reference, 100, seed=6, human_disagrees=0.3)
    happened = actions.check_rollbacks(database)
    assert happened and "overrode the model" in happened[0]
    assert _rung(database) == "shadow"
    with database.read() as session:
        frame, _ = audit.search(session=session, action_prefix="line.level")
    assert frame["actor"].iloc[0] == audit.SYSTEM_ACTOR and "Automatic rollback from canary 20%" in frame["note"].iloc[0]


def test_a_healthy_canary_stays(database, drift_reference) -> None:
    _put(database, "full")
    add_phones(database, drift_reference, 200, seed=7, human_disagrees=0.01)
    assert actions.check_rollbacks(database) == []
    assert _rung(database) == "full"


def test_only_an_admin_edits_the_gates(database) -> None:
    for role in (Role.SUPERVISOR, Role.ENGINEER, Role.MANAGER):
        with pytest.raises(PermissionDeniedError):
            actions.set_gates(database, USERS[role], assignments=["canary.min_pairs=1"])
    config = actions.set_gates(database, ADMIN, assignments=["canary.min_pairs=900"], note="stricter")
    assert config.gate(Rung(AutomationLevel.CANARY, 0.05)).min_pairs == 900


def test_gates_never_silently_count_the_simulated_inspector(database, drift_reference, small_gates, monkeypatch) -> None:
    from core import settings as settings_module
    from core.vocabulary import Verdict
    from db.labels import upsert_label
    from db.models import Inspection

    _put(database, "shadow")
    add_phones(database, drift_reference, 80, seed=91, simulated=True)
    with database.read() as session:
        line = get_line(session=session, name="line-1")
        by_default = ladder_db.evidence(session=session, line=line)
        opted_in = ladder_db.evidence(session=session, line=line, count_simulated=True)
    assert (by_default.pairs, opted_in.pairs) == (0, 80)
    with pytest.raises(actions.LadderError, match="not enough evidence yet"):
        actions.move(database, ENGINEER, line_name="line-1", to=RUNG["assist"])

    # A phone the simulated inspector judged and an engineer labelled counts, by its label.
    with database.write() as session:
        inspection_id = session.query(Inspection.id).filter(Inspection.serial == "T-91-0").scalar()
        upsert_label(session=session, inspection_id=inspection_id, labeller="erin", verdict=Verdict.PASS, boxes=[], reason=None, seconds_taken=None)
    with database.read() as session:
        assert ladder_db.evidence(session=session, line=get_line(session=session, name="line-1")).pairs == 1

    # A demonstration opts in with SHADOWLINE_GATES_COUNT_SIMULATED (``shadowline up`` with its simulator does).
    monkeypatch.setenv("SHADOWLINE_GATES_COUNT_SIMULATED", "true")
    settings_module.get_settings.cache_clear()
    try:
        assert actions.move(database, ENGINEER, line_name="line-1", to=RUNG["assist"]).applied
    finally:
        settings_module.get_settings.cache_clear()

"""Moving a line on the ladder: down at once, up through the gates, into canary and full only with a manager.

Every function checks the user's permission on the server side first (``core/auth.py``), then
decides in one write transaction; a refusal raises :class:`LadderError` with a one-line reason and
changes nothing. Everything that changes is in the audit log.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.auth import Action, CurrentUser, require
from core.drift.metrics import METRIC_BY_NAME
from core.ladder.gates import GateResult, Rung, Status, judge_gate, next_rung, rollback_reason, rung_of
from core.settings import get_settings
from core.vocabulary import AutomationLevel, Role
from db import audit
from db import ladder as ladder_db
from db.engine import Database
from db.lines import LineConfig, get_line, list_lines, update_settings


class LadderError(ValueError):
    """A move that is refused; the message says why."""


@dataclass(frozen=True)
class MoveOutcome:
    """What a move did: applied at once, or recorded as a request for a manager."""

    applied: bool
    rung: Rung
    request_id: int | None = None
    message: str = ""


def current_rung(line: LineConfig) -> Rung:
    return rung_of(line.level, line.policy.canary_share)


def gate_for_next(session: Session, line: LineConfig) -> GateResult | None:
    """The gate to the rung above the line's, judged now (None at the top)."""
    target = next_rung(current_rung(line))
    if target is None:
        return None
    config = ladder_db.get_gate_config(session=session)
    comparison = ladder_db.evidence(session=session, line=line, count_simulated=get_settings().gates_count_simulated)
    # Named as people read them ("mean blue", not "mean_b").
    order = {name: i for i, name in enumerate(METRIC_BY_NAME)}
    metrics = sorted(ladder_db.severe_alarm_metrics(session=session, line_id=line.id), key=lambda m: order.get(m, len(order)))
    severe = [METRIC_BY_NAME[m].label.lower() if m in METRIC_BY_NAME else m for m in metrics]
    return judge_gate(target, config.gate(target), comparison, severe_alarms=severe)


def _apply(session: Session, line: LineConfig, rung: Rung, actor: str, note: str) -> None:
    changes: dict[str, object] = {"level": rung.level.value}
    if rung.share is not None:
        changes["canary_share"] = rung.share
    update_settings(session=session, line_id=line.id, actor=actor, note=note, **changes)


def move(database: Database, user: CurrentUser, *, line_name: str, to: Rung, note: str | None = None) -> MoveOutcome:
    """Move a line to ``to``: down at once (anyone), up one rung when its gate is met (a manager's request for canary and full).

    A move up that its gate refuses is recorded in the audit log (``line.move_refused``: who
    tried, to where, the gate's verdict and their note) and then raised as :class:`LadderError`.
    """
    refused: str | None = None
    with database.write() as session:
        line = get_line(session=session, name=line_name, for_update=True)
        here = current_rung(line)
        if to.key == here.key:
            raise LadderError(f"{line.name} is already at {here.label}")
        if to.order() < here.order():
            require(user, Action.LEVEL_DOWN)
            _apply(session, line, to, user.name, note or f"moved down from {here.label} by {user.name}")
            return MoveOutcome(True, to, message=f"{line.name} moved down from {here.label} to {to.label}")
        require(user, Action.LEVEL_UP)
        above = next_rung(here)
        if above is None or above.key != to.key:
            raise LadderError(f"one rung at a time: from {here.label} the next is {above.label if above else 'nothing (the top)'}")
        result = gate_for_next(session, line)
        assert result is not None
        if result.status is not Status.MET:
            audit.record(
                session=session,
                actor=user.name,
                action="line.move_refused",
                entity="line",
                entity_id=line.id,
                before={"level": here.level.value},
                after={"level": to.level.value, "gate": result.status.value, "criteria": [c.measured for c in result.criteria]},
                note=f"{result.summary}" + (f"; their note: {note}" if note else ""),
            )
            refused = result.summary
        elif result.gate.needs_manager:
            require(user, Action.REQUEST_PROMOTION)
            request = ladder_db.create_request(
                session=session,
                line=line,
                kind="level",
                to_level=to.level.value,
                to_share=to.share,
                actor=user.name,
                evidence=result.as_dict(),
                note=note,
            )
            return MoveOutcome(False, here, request.id, f"request {request.id}: a manager must approve the move of {line.name} to {to.label}")
        else:
            _apply(session, line, to, user.name, note or f"gate met: {'; '.join(c.measured for c in result.criteria)}")
            return MoveOutcome(True, to, message=f"{line.name} moved up from {here.label} to {to.label}")
    assert refused is not None
    raise LadderError(refused)  # after the refusal's audit entry is committed


def approve(database: Database, user: CurrentUser, *, request_id: int, note: str | None = None) -> MoveOutcome:
    """A manager approves a request: the gate is judged again now, and the change applied if it still holds."""
    require(user, Action.APPROVE_PROMOTION)
    with database.write() as session:
        # The line first, then the request row (the order every unit uses): of two managers
        # approving at once, the second waits, then reads the request as approved and is refused.
        line_name = ladder_db.get_request(session=session, request_id=request_id).line
        line = get_line(session=session, name=line_name, for_update=True)
        request = ladder_db.get_request(session=session, request_id=request_id, for_update=True)
        if request.status != "pending":
            raise LadderError(f"request {request_id} is already {request.status}" + (f" (by {request.decided_by})" if request.decided_by else ""))
        here = current_rung(line)
        moved_share = line.level is AutomationLevel.CANARY and (request.from_share or 0) != (line.policy.canary_share or 0)
        # A switch request names the candidate of its day: once someone switched (or changed the
        # candidate) since, applying it would swap the versions back, so it is obsolete too.
        other_candidate = request.kind == "model_switch" and request.model_version_id != line.candidate_model_id
        if request.from_level != line.level.value or moved_share:
            # Closed as obsolete (committed), then refused below.
            ladder_db.close_request(session=session, request_id=request_id, status="obsolete", actor=user.name, note="the line moved since the request")
            obsolete = f"request {request_id} is obsolete: {line.name} is now at {here.label}"
        elif other_candidate:
            ladder_db.close_request(session=session, request_id=request_id, status="obsolete", actor=user.name, note="the candidate changed since")
            obsolete = f"request {request_id} is obsolete: {line.name}'s candidate is now {line.candidate_model_version or 'none'}"
        elif request.kind == "model_switch":
            from core.deployment import apply_switch

            _require_note(note)
            ladder_db.close_request(session=session, request_id=request_id, status="approved", actor=user.name, note=note)
            message = apply_switch(session, line, actor=user.name, note=f"approved request {request_id}" + (f": {note}" if note else ""))
            return MoveOutcome(True, here, request_id, message)
        else:
            result = gate_for_next(session, line)
            if result is None or result.target.level.value != request.to_level or result.status is not Status.MET:
                raise LadderError("the gate no longer holds: " + (result.summary if result else "the line is at the top"))
            _require_note(note)
            ladder_db.close_request(session=session, request_id=request_id, status="approved", actor=user.name, note=note)
            by = f"request {request_id} of {request.requested_by} approved by {user.name}" + (f": {note}" if note else "")
            _apply(session, line, result.target, user.name, by)
            return MoveOutcome(True, result.target, request_id, f"{line.name} moved up from {here.label} to {result.target.label}")
    raise LadderError(obsolete)


def _require_note(note: str | None) -> None:
    """An approval lets the model decide more phones (or swaps the model deciding them): the manager says why, for the audit log."""
    if not note or not note.strip():
        raise LadderError("approving needs a note saying what you checked (it goes into the audit log with the approval)")


def refuse(database: Database, user: CurrentUser, *, request_id: int, note: str) -> None:
    """A manager refuses a request, saying why."""
    require(user, Action.APPROVE_PROMOTION)
    if not note or not note.strip():
        raise LadderError("refusing a request needs a note saying why")
    with database.write() as session:
        ladder_db.close_request(session=session, request_id=request_id, status="refused", actor=user.name, note=note.strip())


def set_gates(database: Database, user: CurrentUser, *, assignments: list[str], note: str | None = None) -> ladder_db.GateConfig:
    """An admin changes the plant's gates (``canary.min_pairs=300``); each value is range-checked, and a safety turned ``off`` is named in the audit note."""
    require(user, Action.EDIT_SETTINGS)
    with database.write() as session:
        before = config = ladder_db.get_gate_config(session=session)
        for assignment in assignments:
            config = config.with_setting(assignment)
        offs = config.safety_offs(before)
        if offs:  # said in so many words in the audit log, beside the before and after
            note = f"SAFETY OFF: {', '.join(offs)}" + (f"; {note}" if note else "")
        ladder_db.save_gate_config(session=session, config=config, actor=user.name, note=note)
        return config


def step_down(session: Session, line: LineConfig, *, to_level: AutomationLevel, reason: str) -> bool:
    """The system moves a line down by itself (rollback); True when it moved."""
    if line.level.rank <= to_level.rank:
        return False
    update_settings(
        session=session,
        line_id=line.id,
        actor=audit.SYSTEM_ACTOR,
        note=f"Automatic rollback from {current_rung(line).label}: {reason}. Moving back up needs the normal approval.",
        level=to_level.value,
    )
    return True


def check_rollbacks(database: Database) -> list[str]:
    """Drop lines in canary or full automation whose people override the model too often; returns what happened."""
    happened = []
    with database.write() as session:
        rule = ladder_db.get_gate_config(session=session).rollback
        for listed in list_lines(session=session):
            if listed.level not in (AutomationLevel.CANARY, AutomationLevel.FULL):
                continue
            line = get_line(session=session, name=listed.name, for_update=True)  # read again under the lock
            if line.level not in (AutomationLevel.CANARY, AutomationLevel.FULL):
                continue
            reason = rollback_reason(rule, ladder_db.evidence(session=session, line=line, count_simulated=get_settings().gates_count_simulated))
            if reason and step_down(session, line, to_level=rule.to_level, reason=reason):
                happened.append(f"{line.name}: {reason}")
    return happened


def may_switch_directly(user: CurrentUser, line: LineConfig) -> bool:
    """Engineers switch models freely below canary; in canary and full a manager must approve (managers may switch)."""
    return line.level not in (AutomationLevel.CANARY, AutomationLevel.FULL) or user.role is Role.MANAGER

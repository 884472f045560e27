"""A line's policy knobs: range-checked in the one setter that pages and the CLI share."""

from __future__ import annotations

import pytest

from core.validation import RangeError
from db.lines import get_line, update_settings

pytestmark = pytest.mark.both_backends


@pytest.mark.parametrize(
    ("changes", "refusal"),
    [
        ({"audit_share": 0.0}, "would stop people auditing"),  # a safety switched off
        ({"audit_share": 1.5}, r"audit_share must be a share in \[0, 1\]"),
        ({"canary_share": 0.0}, r"canary_share must be a share in \(0, 1\]"),
        ({"confidence_low": -0.1}, "confidence_low must be a share"),
        ({"confidence_low": 0.9, "confidence_high": 0.2}, "must not be above confidence_high"),
        ({"confidence_high": 0.05}, "must not be above confidence_high"),  # below the stored low (0.15)
        ({"level": "sky"}, "not a valid AutomationLevel"),
    ],
)
def test_a_policy_change_out_of_range_is_refused_and_nothing_is_written(database, changes, refusal) -> None:
    with database.read() as session:
        before = get_line(session=session, name="line-1")
    with pytest.raises((RangeError, ValueError), match=refusal), database.write() as session:
        update_settings(session=session, line_id=before.id, actor="test", **changes)
    with database.read() as session:
        assert get_line(session=session, name="line-1") == before


def test_a_policy_change_in_range_is_written(database) -> None:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    with database.write() as session:
        update_settings(session=session, line_id=line.id, actor="test", audit_share=0.05, confidence_low=0.1, confidence_high=0.7)
    with database.read() as session:
        policy = get_line(session=session, name="line-1").policy
    assert (policy.audit_share, policy.confidence_low, policy.confidence_high) == (0.05, 0.1, 0.7)


def test_one_line_is_read_in_one_statement_with_its_models(database) -> None:
    """The inspection service reads its line on every posted phone: one statement, the model versions joined, not lazy-loaded."""
    from sqlalchemy import event

    from db.lines import find_line, list_lines

    with database.read() as session:
        every = {line.name: line for line in list_lines(session=session)}
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:
        statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        with database.read() as session:
            by_name = find_line(session=session, name="line-1")
            by_id = find_line(session=session, line_id=every["line-1"].id)
            missing = find_line(session=session, name="no-such-line")
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    assert by_name == every["line-1"] and by_name.active_model_version is not None
    assert by_id == every["line-1"]
    assert missing is None
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 3


def test_a_lines_decision_threshold_is_its_active_models_and_the_default_without_one(database) -> None:
    """The threshold is read out of the active version's card in the same statement (JSON on SQLite and PostgreSQL)."""
    from core.detector.adapter import DEFAULT_DECISION_THRESHOLD
    from db.lines import add_line, find_line
    from db.models import LineSettings, ModelVersion

    with database.write() as session:
        shipped = find_line(session=session, name="line-1")
        assert shipped is not None and shipped.active_model_id is not None
        card = dict(session.get(ModelVersion, shipped.active_model_id).card)
        session.add(ModelVersion(version="t-042", path="/nowhere", card={**card, "version": "t-042", "decision_threshold": 0.42}))
        session.add(ModelVersion(version="t-none", path="/nowhere", card={k: v for k, v in card.items() if k != "decision_threshold"}))
        session.flush()
        ids = {v.version: v.id for v in session.query(ModelVersion).filter(ModelVersion.version.in_(["t-042", "t-none"]))}
        for name, model in (("with-threshold", "t-042"), ("without-threshold", "t-none"), ("no-model", None)):
            line_id = add_line(session=session, name=name, actor="test", active_model_id=ids.get(model) if model else None)
            if model:
                session.get(LineSettings, line_id).candidate_model_id = shipped.active_model_id
    with database.read() as session:
        found = {name: find_line(session=session, name=name) for name in ("with-threshold", "without-threshold", "no-model")}
    assert found["with-threshold"].policy.decision_threshold == pytest.approx(0.42)
    assert found["with-threshold"].active_model_version == "t-042" and found["with-threshold"].candidate_model_version == shipped.active_model_version
    assert found["without-threshold"].policy.decision_threshold == DEFAULT_DECISION_THRESHOLD
    assert found["no-model"].policy.decision_threshold == DEFAULT_DECISION_THRESHOLD and found["no-model"].active_model_version is None

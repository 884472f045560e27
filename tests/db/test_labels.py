"""Labelling on a real database: the queue's order, saving with who and when, blind second labels, truth in the comparison."""

from __future__ import annotations

import pytest

from core.auth import CurrentUser, PermissionDeniedError
from core.labelling import LabelBox, adjudicate, save_label
from core.vocabulary import Role, Verdict
from db import audit
from db.comparison import paired_decisions
from db.labels import awaiting_adjudication, label_queue, labels_of, truths
from db.lines import get_line
from tests.drift_data import add_phones

pytestmark = pytest.mark.both_backends

ERIN, ELI = CurrentUser("erin", Role.ENGINEER), CurrentUser("eli", Role.ENGINEER)
CHIP = [LabelBox("chip", 10, 10, 40, 30)]


def _line_id(database) -> int:
    with database.read() as session:
        return get_line(session=session, name="line-1").id


def test_the_queue_puts_disagreements_first_and_drops_what_i_labelled(database, drift_reference) -> None:
    add_phones(database, drift_reference, 200, seed=1, human_disagrees=0.1)
    with database.read() as session:
        queue = label_queue(session=session, labeller="erin", limit=500)
    reasons = [item.reason for item in queue]
    assert reasons and reasons[0] == "disagreement" and "low_confidence" in reasons
    assert reasons == sorted(reasons, key=["audit_failure", "disagreement", "drift_window", "low_confidence"].index)
    first = queue[0]
    assert first.human_verdict != first.model_verdict
    save_label(database, ERIN, inspection_id=first.inspection_id, verdict=Verdict.REJECT, boxes=CHIP, reason=first.reason)
    with database.read() as session:
        assert first.inspection_id not in [i.inspection_id for i in label_queue(session=session, labeller="erin", limit=500)]
        assert first.inspection_id in [i.inspection_id for i in label_queue(session=session, labeller="eli", limit=500)]  # blind second label
        only_low = label_queue(session=session, labeller="eli", reasons=("low_confidence",), limit=500)
    assert {i.reason for i in only_low} == {"low_confidence"}


def test_saving_checks_the_role_and_the_label_and_records_who(database, drift_reference) -> None:
    add_phones(database, drift_reference, 40, seed=2, human_disagrees=0.3)
    with database.read() as session:
        inspection_id = label_queue(session=session, labeller="x", reasons=("low_confidence", "disagreement"), limit=1)[0].inspection_id
    with pytest.raises(PermissionDeniedError):
        save_label(database, CurrentUser("sam", Role.SUPERVISOR), inspection_id=inspection_id, verdict=Verdict.PASS, boxes=[])
    with pytest.raises(ValueError, match="cannot pass"):
        save_label(database, ERIN, inspection_id=inspection_id, verdict=Verdict.PASS, boxes=CHIP)
    with pytest.raises(ValueError, match="needs at least one box"):
        save_label(database, ERIN, inspection_id=inspection_id, verdict=Verdict.REJECT, boxes=[])
    save_label(database, ERIN, inspection_id=inspection_id, verdict=Verdict.PASS, boxes=[], seconds_taken=4.2)
    save_label(database, ERIN, inspection_id=inspection_id, verdict=Verdict.REJECT, boxes=CHIP)  # relabel replaces
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=inspection_id)
        frame, total = audit.search(session=session, action_prefix="label.")
    assert [(label.labeller, label.verdict) for label in labels] == [("erin", Verdict.REJECT)]
    assert total == 2 and set(frame["actor"]) == {"erin"}


def test_labels_are_the_better_truth_once_they_agree_or_are_adjudicated(database, drift_reference) -> None:
    add_phones(database, drift_reference, 3, seed=3)
    with database.read() as session:
        pairs = paired_decisions(session=session, line_id=_line_id(database))
    row = pairs.iloc[0]
    inspection_id = int(row["inspection_id"])
    opposite = Verdict.PASS if row["person_verdict"] == "reject" else Verdict.REJECT
    boxes = CHIP if opposite is Verdict.REJECT else []
    save_label(database, ERIN, inspection_id=inspection_id, verdict=opposite, boxes=boxes)
    with database.read() as session:
        pairs = paired_decisions(session=session, line_id=_line_id(database)).set_index("inspection_id")
    assert pairs.loc[inspection_id, "human_verdict"] == opposite.value and pairs.loc[inspection_id, "reference"] == "label"
    assert pairs.loc[inspection_id, "person_verdict"] == row["person_verdict"]

    other = Verdict.REJECT if opposite is Verdict.PASS else Verdict.PASS
    save_label(database, ELI, inspection_id=inspection_id, verdict=other, boxes=CHIP if other is Verdict.REJECT else [])
    with database.read() as session:
        assert inspection_id not in truths(session=session)  # two labels disagree: no truth until adjudicated
        eli_label = next(label for label in labels_of(session=session, inspection_id=inspection_id) if label.labeller == "eli")
    adjudicate(database, ERIN, label_id=eli_label.id, note="looked again under the lamp")
    with database.read() as session:
        assert truths(session=session)[inspection_id].labeller == "eli"


def test_labels_that_disagree_wait_for_adjudication_until_someone_settles_them(database, drift_reference) -> None:
    add_phones(database, drift_reference, 60, seed=2, human_disagrees=0.2)
    with database.read() as session:
        a, b, c = (item.inspection_id for item in label_queue(session=session, labeller="erin", limit=3))
    for phone in (a, b, c):
        save_label(database, ERIN, inspection_id=phone, verdict=Verdict.REJECT, boxes=CHIP)
    save_label(database, ELI, inspection_id=a, verdict=Verdict.PASS, boxes=[])  # disagrees
    save_label(database, ELI, inspection_id=b, verdict=Verdict.REJECT, boxes=[LabelBox("chip", 11, 10, 40, 31)])  # agrees
    save_label(database, ELI, inspection_id=c, verdict=Verdict.REJECT, boxes=[LabelBox("scratch", 10, 10, 40, 30)])  # class differs
    with database.read() as session:
        assert awaiting_adjudication(session=session) == [a, c]
        assert awaiting_adjudication(session=session, line_id=_line_id(database) + 1) == []
        eli_label = next(label for label in labels_of(session=session, inspection_id=a) if label.labeller == "eli")
    adjudicate(database, ERIN, label_id=eli_label.id, note="no chip on second look")
    with database.read() as session:
        assert awaiting_adjudication(session=session) == [c]
        assert truths(session=session, inspection_ids=[a])[a].labeller == "eli"


def test_a_label_is_saved_only_for_the_phone_its_boxes_were_drawn_on(database, drift_reference) -> None:
    from core.labelling import LabelMismatchError

    add_phones(database, drift_reference, 20, seed=2, human_disagrees=0.3)
    with database.read() as session:
        first, second = label_queue(session=session, labeller="erin", limit=2)
    with pytest.raises(LabelMismatchError, match="drawn on phone"):
        save_label(database, ERIN, inspection_id=first.inspection_id, verdict=Verdict.REJECT, boxes=CHIP, drawn_on=second.inspection_id)
    with database.read() as session:
        assert labels_of(session=session, inspection_id=first.inspection_id) == []
    save_label(database, ERIN, inspection_id=first.inspection_id, verdict=Verdict.REJECT, boxes=CHIP, drawn_on=first.inspection_id)
    with database.read() as session:
        assert [label.labeller for label in labels_of(session=session, inspection_id=first.inspection_id)] == ["erin"]

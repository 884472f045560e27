"""The Labelling page: the queue's first phone, the model's boxes to start from, saving, blind second labels."""

from __future__ import annotations

import pytest

from core.auth import CurrentUser
from core.camera import get_scenario
from core.labelling import LabelBox, save_label
from core.line_simulator import SimulatedInspector, simulate_line
from core.vocabulary import Role, Verdict
from core.worker import Worker
from db import audit
from db.labels import label_queue, labels_of
from db.lines import get_line

PAGE = "../pages/labelling.py"


def _seed(database, settings) -> None:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(
        database,
        settings,
        line_id=line.id,
        line_name=line.name,
        scenario=get_scenario("new-defect").with_ramp(0, 0),
        count=16,
        rate=1000,
        seed=12,
        inspector=None,
    )
    Worker(database, settings).run(until_empty=True)
    SimulatedInspector(miss_rate=0.0, false_reject_rate=0.2).answer_open_tasks(database, line_id=line.id)


def _set_boxes(at, item, boxes: list[dict]) -> None:
    """What the box editor sends when the engineer has finished drawing (the browser test drives the real mouse)."""
    at.session_state[f"labelling.editor.{item.inspection_id}"] = {"drawing": {"revision": str(item.inspection_id), "boxes": boxes}}


def _page(app_for, name: str, role: Role = Role.ENGINEER):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(name, role)
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    return at


def test_engineer_labels_the_first_phone_of_the_queue(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first = label_queue(session=session, labeller="erin", limit=1)[0]
    at = _page(app_for, "erin")
    assert any(first.serial in m.value for m in at.markdown)
    assert not at.error, [e.value for e in at.error]  # the image was readable and the boxes valid
    _set_boxes(at, first, [])
    at.run()
    at.radio(key=f"labelling.verdict.{first.inspection_id}.none").set_value("pass")
    at.button(key="labelling.save").click().run()
    assert not at.exception
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=first.inspection_id)
        after = label_queue(session=session, labeller="erin", limit=1)[0]
    assert [(label.labeller, label.verdict, label.boxes) for label in labels] == [("erin", Verdict.PASS, [])]
    assert after.inspection_id != first.inspection_id
    assert any(after.serial in m.value for m in at.markdown), "the next phone is shown at once"


def test_a_second_engineer_sees_where_the_labels_differ(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first = label_queue(session=session, labeller="erin", limit=1)[0]
    save_label(database, CurrentUser("erin", Role.ENGINEER), inspection_id=first.inspection_id, verdict=Verdict.REJECT, boxes=[LabelBox("chip", 5, 5, 50, 40)])
    at = _page(app_for, "eli")
    _set_boxes(at, first, [])
    at.run()
    at.radio(key=f"labelling.verdict.{first.inspection_id}.none").set_value("pass")
    at.button(key="labelling.save").click().run()
    assert not at.exception
    assert any("the verdicts differ" in w.value for w in at.warning)
    where = at.dataframe[-1].value
    assert where.to_dict("records") == [{"yours": None, "erin's": "1 chip", "IoU": None, "where": "only in the second label"}]
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert any("orange: erin's (reject)" in caption for caption in captions), captions


def test_only_engineers_label(database, app_for) -> None:
    for role in (Role.SUPERVISOR, Role.MANAGER, Role.ADMIN):
        at = app_for()
        at.session_state["auth.user"] = CurrentUser("x", role)
        at.run()
        with pytest.raises(ValueError):
            at.switch_page(PAGE)


def test_boxes_drawn_in_the_editor_are_saved_and_the_verdict_follows_them(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first = label_queue(session=session, labeller="erin", limit=1)[0]
    at = _page(app_for, "erin")
    drawn = {"class_name": "chip", "x1": 10.0, "y1": 20.0, "x2": 60.0, "y2": 55.0}
    _set_boxes(at, first, [])
    at.run()
    assert at.radio(key=f"labelling.verdict.{first.inspection_id}.none").value == "pass", "no boxes: the verdict starts at pass"
    _set_boxes(at, first, [drawn])
    at.run()
    assert at.radio(key=f"labelling.verdict.{first.inspection_id}.boxes").value == "reject", "a drawn box turns the verdict to reject"
    assert at.dataframe[0].value.to_dict("records") == [{"class": "chip", "x1": 10.0, "y1": 20.0, "x2": 60.0, "y2": 55.0}]
    at.button(key="labelling.save").click().run()
    assert not at.exception
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=first.inspection_id)
    assert [(label.verdict, label.boxes) for label in labels] == [(Verdict.REJECT, [LabelBox("chip", 10, 20, 60, 55)])]


def test_a_pass_with_boxes_is_refused_with_a_reason(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first = label_queue(session=session, labeller="erin", limit=1)[0]
    at = _page(app_for, "erin")
    _set_boxes(at, first, [{"class_name": "scratch", "x1": 1, "y1": 2, "x2": 30, "y2": 40}])
    at.run()
    at.radio(key=f"labelling.verdict.{first.inspection_id}.boxes").set_value("pass")
    at.button(key="labelling.save").click().run()
    assert any("cannot pass" in e.value for e in at.error)
    with database.read() as session:
        assert labels_of(session=session, inspection_id=first.inspection_id) == []


def test_an_unreadable_image_cannot_be_labelled(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first = label_queue(session=session, labeller="erin", limit=1)[0]
    (settings.data_dir / first.image_path).write_bytes(b"\xff\xd8\xff truncated")
    at = _page(app_for, "erin")
    assert any("cannot be read" in e.value for e in at.error)
    assert at.button(key="labelling.save").disabled


def test_labels_that_disagree_are_settled_later_from_their_own_list(database, settings, app_for) -> None:
    _seed(database, settings)
    with database.read() as session:
        first, second = label_queue(session=session, labeller="erin", limit=2)
    chip = [LabelBox("chip", 5, 5, 50, 40)]
    for phone in (first, second):
        save_label(database, CurrentUser("erin", Role.ENGINEER), inspection_id=phone.inspection_id, verdict=Verdict.REJECT, boxes=chip)
    save_label(database, CurrentUser("eli", Role.ENGINEER), inspection_id=first.inspection_id, verdict=Verdict.PASS, boxes=[])
    save_label(database, CurrentUser("eli", Role.ENGINEER), inspection_id=second.inspection_id, verdict=Verdict.REJECT, boxes=chip)  # agrees
    at = _page(app_for, "ana")
    mode = at.radio(key="labelling.mode")
    assert mode.options == ["Label phones", "Settle disagreements (1)"]
    mode.set_value("settle").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="labelling.settle_phone").value == first.inspection_id
    assert any("the verdicts differ" in w.value for w in at.warning)
    with database.read() as session:
        eli = next(label for label in labels_of(session=session, inspection_id=first.inspection_id) if label.labeller == "eli")
    at.radio(key=f"labelling.adj.{first.inspection_id}").set_value(eli.id)
    at.text_input(key=f"labelling.adj_note.{first.inspection_id}").input("the mark wipes off")
    at.button(key=f"labelling.adjudicate.{first.inspection_id}").click().run()
    assert not at.exception, at.exception
    assert any("No labels wait for adjudication" in s.value for s in at.success)
    with database.read() as session:
        assert [label.adjudicated for label in labels_of(session=session, inspection_id=first.inspection_id) if label.labeller == "eli"] == [True]
        entries, _ = audit.search(session=session, action_prefix="label.adjudicate")
    assert entries[["actor", "note"]].values.tolist() == [["ana", "the mark wipes off"]]


def test_the_phone_stays_in_the_editor_while_new_phones_arrive(database, settings, app_for) -> None:
    _seed(database, settings)
    at = _page(app_for, "erin")
    held = at.session_state["labelling.current"]
    # The line keeps running: newer disagreements rank above the phone in the editor.
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(
        database,
        settings,
        line_id=line.id,
        line_name=line.name,
        scenario=get_scenario("new-defect").with_ramp(0, 0),
        count=8,
        rate=1000,
        seed=13,
        inspector=None,
    )
    Worker(database, settings).run(until_empty=True)
    SimulatedInspector(miss_rate=0.0, false_reject_rate=0.5).answer_open_tasks(database, line_id=line.id)
    with database.read() as session:
        assert label_queue(session=session, labeller="erin", limit=1)[0].inspection_id != held, "the test needs a new best-first phone"
        item = next(i for i in label_queue(session=session, labeller="erin", limit=500) if i.inspection_id == held)
    _set_boxes(at, item, [{"class_name": "scratch", "x1": 20, "y1": 30, "x2": 60, "y2": 50}])
    at.run()  # drawing reruns the page
    assert at.session_state["labelling.current"] == held, "a new phone must not take the editor"
    at.button(key="labelling.save").click().run()
    assert not at.exception
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=held)
    assert [(label.labeller, label.verdict, [b.as_dict() for b in label.boxes]) for label in labels] == [
        ("erin", Verdict.REJECT, [{"class_name": "scratch", "x1": 20.0, "y1": 30.0, "x2": 60.0, "y2": 50.0}])
    ]
    assert at.session_state["labelling.current"] != held, "after the save the best phone comes next"


def test_a_save_of_boxes_drawn_on_another_phone_is_refused(database, settings, app_for) -> None:
    _seed(database, settings)
    at = _page(app_for, "erin")
    held = at.session_state["labelling.current"]
    at.session_state[f"labelling.editor.{held}"] = {
        "drawing": {"revision": str(held + 1), "boxes": [{"class_name": "chip", "x1": 5, "y1": 5, "x2": 50, "y2": 40}]}
    }
    at.run()
    at.button(key="labelling.save").click().run()
    assert not at.exception
    assert any("not on phone" in e.value for e in at.error), [e.value for e in at.error]
    with database.read() as session:
        assert labels_of(session=session, inspection_id=held) == [] and labels_of(session=session, inspection_id=held + 1) == []


def test_a_save_pressed_in_a_tab_whose_phone_was_labelled_meanwhile_records_nothing(database, settings, app_for) -> None:
    """Two tabs show the same phone; the first saves it. The second tab's Save (pressed on that phone)
    must not land on the phone the page would show next, which the engineer never saw."""
    _seed(database, settings)
    first_tab, second_tab = _page(app_for, "erin"), _page(app_for, "erin")
    held = first_tab.session_state["labelling.current"]
    assert second_tab.session_state["labelling.current"] == held
    first_tab.button(key="labelling.save").click().run()
    assert not first_tab.exception and first_tab.session_state["labelling.current"] != held
    with database.read() as session:
        labelled_before = {item.inspection_id for item in label_queue(session=session, labeller="erin", limit=500)}
    second_tab.button(key="labelling.save").click().run()
    assert not second_tab.exception
    assert any("Not saved" in w.value and "labelled meanwhile" in w.value for w in second_tab.warning), [w.value for w in second_tab.warning]
    shown = second_tab.session_state["labelling.current"]
    assert shown != held
    with database.read() as session:
        assert [label.labeller for label in labels_of(session=session, inspection_id=held)] == ["erin"], "one label: the first tab's"
        assert labels_of(session=session, inspection_id=shown) == [], "nothing recorded on the phone the second tab shows now"
        assert {item.inspection_id for item in label_queue(session=session, labeller="erin", limit=500)} == labelled_before
    # The next Save in the second tab, on the phone it shows, is saved as usual.
    second_tab.button(key="labelling.save").click().run()
    with database.read() as session:
        assert [label.labeller for label in labels_of(session=session, inspection_id=shown)] == ["erin"]


def test_unsaved_boxes_and_verdict_come_back_after_a_reload(database, settings, app_for) -> None:
    _seed(database, settings)
    at = _page(app_for, "erin")
    held = at.session_state["labelling.current"]
    with database.read() as session:
        item = next(i for i in label_queue(session=session, labeller="erin", limit=500) if i.inspection_id == held)
    drawn = [{"class_name": "chip", "x1": 11.0, "y1": 12.0, "x2": 40.0, "y2": 44.0}]
    _set_boxes(at, item, drawn)
    at.run()
    at.radio(key=f"labelling.verdict.{held}.boxes").set_value("pass").run()  # the engineer's own call, against the boxes
    reloaded = _page(app_for, "erin")  # a reload: a new browser session, nothing of the old one's state
    assert reloaded.session_state["labelling.current"] == held
    assert any("are back" in c.value for c in reloaded.caption), [c.value for c in reloaded.caption]
    table = reloaded.dataframe[0].value
    assert table[["x1", "y1", "x2", "y2"]].values.tolist() == [[11.0, 12.0, 40.0, 44.0]]
    assert reloaded.radio(key=f"labelling.verdict.{held}.boxes").value == "pass"
    # Saved, the draft is gone: the next phone starts from the model's boxes.
    reloaded.radio(key=f"labelling.verdict.{held}.boxes").set_value("reject").run()
    reloaded.button(key="labelling.save").click().run()
    assert not reloaded.exception
    with database.read() as session:
        (label,) = labels_of(session=session, inspection_id=held)
    assert label.verdict is Verdict.REJECT and [b.as_dict() for b in label.boxes] == drawn
    again = _page(app_for, "erin")
    assert again.session_state["labelling.current"] != held
    assert not any("are back" in c.value for c in again.caption)

"""Labelling: phones worth a label, best first; the engineer corrects the model's boxes and sets the gold verdict.
Where two engineers' labels of a phone disagree, one of them is adjudicated as the truth."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from app import state
from app.box_editor import Drawing, as_drawn, box_editor, image_payload
from app.session import current_user
from app.widgets import line_picker, local_time, two_labels_image
from core.auth import PermissionDeniedError
from core.labelling import LabelBox, adjudicate, agreement_rows, compare_labels, save_label
from core.vocabulary import Verdict
from db.labels import REASONS, LabelError, LabelView, QueueItem, awaiting_adjudication, image_path_of, label_queue, labels_of, serials_of, truth
from db.lines import list_lines
from db.registry import line_classes

WINDOWS = {"last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7), "all time": None}
REASON_TEXT = {
    "audit_failure": "a person overrode the model in an audit",
    "disagreement": "the person and the model disagree",
    "drift_window": "inspected while a drift alarm was raised",
    "low_confidence": "the model was unsure",
}
#: The same reasons as short chips for the "Why" filter (the sentences above are cut there at 1440 px).
REASON_CHIP = {
    "audit_failure": "audit override",
    "disagreement": "disagreement",
    "drift_window": "during drift",
    "low_confidence": "model unsure",
}

#: The phone a Save or Skip was pressed for: set by the button's callback with the phone shown when
#: the button was drawn, so a click always acts on the phone the engineer saw (see label_phones).
ASKED_KEY = "labelling.asked"


@dataclass(frozen=True)
class Draft:
    """An engineer's unsaved boxes and verdict of one phone, kept on the server so a reload keeps them."""

    inspection_id: int
    boxes: list[dict[str, Any]]
    verdict: str


@st.cache_resource(show_spinner=False)
def _drafts() -> tuple[dict[tuple[str, str], Draft], threading.Lock]:
    """One draft per engineer and database (the phone in their editor), shared by their tabs and reloads, in this app process."""
    return {}, threading.Lock()


def _draft_of(name: str, inspection_id: int) -> Draft | None:
    drafts, lock = _drafts()
    with lock:
        draft = drafts.get((database.url, name))
    return draft if draft is not None and draft.inspection_id == inspection_id else None


def _keep_draft(name: str, draft: Draft | None, *, inspection_id: int) -> None:
    """Keep ``draft`` as the engineer's; None forgets theirs of ``inspection_id`` (saved, skipped, or as the model drew it)."""
    drafts, lock = _drafts()
    key = (database.url, name)
    with lock:
        if draft is not None:
            drafts[key] = draft
        elif key in drafts and drafts[key].inspection_id == inspection_id:
            del drafts[key]


def _ask(action: str, inspection_id: int, serial: str) -> None:
    st.session_state[ASKED_KEY] = (action, inspection_id, serial)


database = state.database()
settings = state.settings()
user = current_user()
assert user is not None
st.title("Labelling")


def show_two_labels(first: LabelView, second: LabelView, image_path: str | None, first_name: str) -> None:
    """Both labels drawn on the phone's image, and which boxes match (IoU), differ in class or stand alone."""
    agreement = compare_labels((first.verdict, first.boxes), (second.verdict, second.boxes))
    (st.success if agreement.agree else st.warning)(f"{first_name.capitalize()} and {second.labeller}'s labels: {agreement.describe()}.")
    if agreement.agree:
        return
    picture, where = st.columns([3, 2])
    both = (
        two_labels_image(
            str(settings.image_file(image_path)),
            tuple((b.x1, b.y1, b.x2, b.y2, b.class_name) for b in first.boxes),
            tuple((b.x1, b.y1, b.x2, b.y2, b.class_name) for b in second.boxes),
        )
        if image_path
        else None
    )
    if both is None:
        picture.error("The stored image cannot be read; the boxes are in the table.")
    else:
        picture.image(both, caption=f"blue: {first_name} ({first.verdict.value}); orange: {second.labeller}'s ({second.verdict.value})", width="stretch")
    table = pd.DataFrame(agreement_rows(agreement, first.boxes, second.boxes), columns=["first", "second", "iou", "where"])
    where.dataframe(table.rename(columns={"first": first_name, "second": f"{second.labeller}'s", "iou": "IoU"}), hide_index=True, width="stretch")


def settle(inspection_id: int, labels: list[LabelView]) -> None:
    """Choose which label is the phone's truth (audited with a note)."""
    choice = st.radio(
        "Which label is the truth?",
        [label.id for label in labels],
        format_func=lambda i: next(f"{label.labeller}'s ({label.verdict.value}, {len(label.boxes)} boxes)" for label in labels if label.id == i),
        key=f"labelling.adj.{inspection_id}",
        horizontal=True,
    )
    note = st.text_input("Note (why this one)", key=f"labelling.adj_note.{inspection_id}")
    if st.button("Adjudicate", key=f"labelling.adjudicate.{inspection_id}", type="primary"):
        try:
            adjudicate(database, user, label_id=int(choice), note=note.strip() or "adjudicated on the Labelling page")
        except (LabelError, PermissionDeniedError) as error:
            st.error(str(error))
        else:
            st.session_state.pop("labelling.saved", None)
            st.session_state["labelling.settled"] = inspection_id
            st.rerun()


def previous_phone() -> None:
    """The phone labelled just now: does another engineer's label of it agree?"""
    last = st.session_state.get("labelling.saved")
    if last is None:
        return
    with database.read() as session:
        labels = labels_of(session=session, inspection_id=last)
        image_path = image_path_of(session=session, inspection_id=last)
    mine = next((label for label in labels if label.labeller == user.name), None)
    others = [label for label in labels if label.labeller != user.name]
    if mine and others:
        st.subheader("Two labels of the phone you just saved")
        for other in others:
            show_two_labels(mine, other, image_path, "yours")
        if truth(labels) is None:
            settle(last, labels)
    elif mine:
        st.caption(f"Saved your label of the previous phone ({mine.verdict.value}, {len(mine.boxes)} box{'' if len(mine.boxes) == 1 else 'es'}).")


def held_phone(queue: list[QueueItem], skipped: set[int], *, line_id: int | None, since: datetime | None, reasons: tuple[str, ...]) -> QueueItem:
    """The phone in the editor: it stays until the engineer saves, skips or changes the filters.

    New phones keep arriving while the line runs and may rank above it; they wait their turn.
    """
    held = st.session_state.get("labelling.current")
    if held is not None and held not in skipped:
        found = next((q for q in queue if q.inspection_id == held), None)
        if found is None:  # pushed past the list's limit by newer phones, but still worth a label
            with database.read() as session:
                found = next(iter(label_queue(session=session, labeller=user.name, line_id=line_id, since=since, reasons=reasons, inspection_id=held)), None)
        if found is not None:
            return found
    waiting = [q for q in queue if q.inspection_id not in skipped] or queue
    return waiting[0]


def label_phones(line_id: int | None) -> None:
    st.caption(
        "Start from the model's boxes: drag on the image to draw a box, drag a box to move it, drag a corner to resize it. "
        "With the image focused: 1-9 set the class of the selected box (the class list's order), "
        "A adds a box, Delete removes it, arrows nudge it (Alt+arrows resize). "
        "S saves your label (with your name and the time), N skips to the next phone."
    )
    window = filters[1].selectbox("Time range", list(WINDOWS), index=1, key="labelling.window")
    reasons = filters[2].multiselect(
        "Why",
        list(REASONS),
        default=list(REASONS),
        format_func=lambda r: REASON_CHIP[r],
        key="labelling.reasons",
        help="; ".join(f"{REASON_CHIP[r]}: {REASON_TEXT[r]}" for r in REASONS),
    )
    since = datetime.now(UTC) - WINDOWS[window] if WINDOWS[window] else None
    with database.read() as session:
        queue = label_queue(session=session, labeller=user.name, line_id=line_id, since=since, reasons=tuple(reasons), limit=200)
    skipped: set[int] = st.session_state.setdefault("labelling.skipped", set())
    # What a Save or Skip was pressed for: the phone shown when the button was drawn (its callback's
    # arguments), not whichever phone this run would show. Labelled meanwhile (in another tab, or
    # by the same engineer elsewhere), it is no longer in the queue, and the click does nothing.
    asked = st.session_state.pop(ASKED_KEY, None)
    if asked is not None and asked[0] == "skip":
        skipped.add(asked[1])
        _keep_draft(user.name, None, inspection_id=asked[1])
        asked = None
    if not queue:
        if asked is not None:
            st.warning(f"Not saved: {asked[2]} was labelled meanwhile (in another tab?), and nothing else waits for your label here.")
        st.success("Nothing waits for your label in this range.")
        previous_phone()
        return

    item = held_phone(queue, skipped, line_id=line_id, since=since, reasons=tuple(reasons))
    st.caption(
        f"{len(queue)}{' or more' if len(queue) == 200 else ''} phones worth a label; this one because {REASON_TEXT[item.reason]}. "
        "It stays here until you save or skip it, however many phones arrive."
    )
    if asked is not None and asked[1] != item.inspection_id:
        st.warning(f"Not saved: {asked[2]} was labelled meanwhile (in another tab?). This is the next phone; nothing was recorded on it.")
        asked = None
    if st.session_state.get("labelling.current") != item.inspection_id:
        st.session_state["labelling.current"] = item.inspection_id
        st.session_state["labelling.started"] = time.monotonic()
        # A reload (or another tab) shows the same phone: with the boxes the engineer had drawn on it.
        st.session_state["labelling.restored"] = _draft_of(user.name, item.inspection_id)
    restored: Draft | None = st.session_state.get("labelling.restored")  # set with labelling.current: this phone's

    with database.read() as session:
        classes = line_classes(session=session, line_id=item.line_id)
    model_boxes = [
        {"class_name": b["class_name"], "x1": b["x1"], "y1": b["y1"], "x2": b["x2"], "y2": b["y2"]} for b in item.model_boxes if b["confidence"] >= 0.25
    ]
    left, right = st.columns([3, 2])
    with left:
        payload = image_payload(str(settings.image_file(item.image_path)))
        if payload is None:
            st.error("The stored image cannot be read: skip this phone (N); it stays in the queue for someone to look at.")
            drawing = Drawing(str(item.inspection_id), [])
        else:
            drawing = box_editor(
                key=f"labelling.editor.{item.inspection_id}",
                image=payload,
                boxes=restored.boxes if restored is not None else model_boxes,
                classes=classes,
                revision=str(item.inspection_id),
                model_boxes=model_boxes,
            )
    try:
        boxes = [LabelBox.from_dict(row) for row in drawing.boxes]
        box_error = None
    except (ValueError, KeyError, TypeError) as error:
        boxes, box_error = [], str(error)
    # The verdict follows the boxes (boxes mean reject) until the engineer changes it: one widget for
    # "has boxes" and one for "has none", so a quick run of edits can never leave a stale choice.
    verdict_key = f"labelling.verdict.{item.inspection_id}.{'boxes' if boxes else 'none'}"
    with right:
        st.markdown(f"**{item.serial}** · processed {local_time(item.processed_at, settings.plant_timezone, '%Y-%m-%d %H:%M:%S')}")
        st.caption("Classes (keys): " + " · ".join(f"{index} {name}" if index <= 9 else name for index, name in enumerate(classes, start=1)))
        st.markdown(
            f"Person: **{item.human_verdict or 'not judged'}** · model: **{item.model_verdict}** (highest confidence {item.max_confidence:.2f})"
            if item.max_confidence is not None
            else "The model gave no prediction."
        )
        table = pd.DataFrame([b.as_dict() for b in boxes], columns=["class_name", "x1", "y1", "x2", "y2"], index=range(1, len(boxes) + 1))
        st.dataframe(table.rename(columns={"class_name": "class"}), width="stretch")
        choices = [Verdict.PASS.value, Verdict.REJECT.value]
        default = 1 if boxes else 0
        if restored is not None and bool(restored.boxes) == bool(boxes):
            default = choices.index(restored.verdict)
        verdict = st.radio("Gold verdict", choices, index=default, horizontal=True, key=verdict_key)
        save_col, skip_col = st.columns(2)
        save_col.button(
            "Save label",
            type="primary",
            shortcut="S",
            key="labelling.save",
            width="stretch",
            disabled=payload is None,
            on_click=_ask,
            args=("save", item.inspection_id, item.serial),
        )
        skip_col.button("Next (skip)", shortcut="N", key="labelling.skip", width="stretch", on_click=_ask, args=("skip", item.inspection_id, item.serial))
        if restored is not None:
            st.caption("Your unsaved boxes and verdict of this phone are back, as you left them.")

    # Unsaved work survives a reload: kept while it differs from where the phone started (the model's boxes).
    changed = drawing.boxes != as_drawn(model_boxes) or verdict != choices[1 if boxes else 0]
    _keep_draft(user.name, Draft(item.inspection_id, drawing.boxes, verdict) if changed else None, inspection_id=item.inspection_id)
    if box_error:
        st.error(f"A box is not valid: {box_error}")
    saved = asked is not None and asked[0] == "save" and asked[1] == item.inspection_id
    if saved and not box_error:
        try:
            save_label(
                database,
                user,
                inspection_id=item.inspection_id,
                verdict=Verdict(verdict),
                boxes=boxes,
                reason=item.reason,
                seconds_taken=time.monotonic() - st.session_state.get("labelling.started", time.monotonic()),
                drawn_on=int(drawing.revision) if drawing.revision.isdigit() else -1,
                classes=classes,
            )
        except (ValueError, LabelError, PermissionDeniedError) as error:
            st.error(str(error))
        else:
            st.session_state["labelling.saved"] = item.inspection_id
            _keep_draft(user.name, None, inspection_id=item.inspection_id)
            st.rerun()
    previous_phone()


def settle_disagreements(waiting: list[int]) -> None:
    settled = st.session_state.pop("labelling.settled", None)
    if settled is not None:
        st.success("Adjudicated: that phone's truth is set (see the audit log).")
    if not waiting:
        st.success("No labels wait for adjudication.")
        return
    with database.read() as session:
        serials = serials_of(session=session, inspection_ids=waiting)
    chosen = st.selectbox("Phone", waiting, format_func=lambda i: str(serials.get(i, i)), key="labelling.settle_phone", index=0)
    if chosen not in waiting:
        return
    with database.read() as session:
        labels, image_path = labels_of(session=session, inspection_id=chosen), image_path_of(session=session, inspection_id=chosen)
    for other in labels[1:]:
        show_two_labels(labels[0], other, image_path, f"{labels[0].labeller}'s")
    settle(chosen, labels)


with database.read() as session:
    lines = list_lines(session=session)
    waiting_ids = awaiting_adjudication(session=session)
mode = st.radio(
    "Task",
    ["label", "settle"],
    format_func=lambda m: "Label phones" if m == "label" else f"Settle disagreements ({len(waiting_ids)}{'+' if len(waiting_ids) == 100 else ''})",
    horizontal=True,
    key="labelling.mode",
    label_visibility="collapsed",
)
filters = st.columns([1, 1, 3])  # the Why filter wide enough for its four chips at 1440 px
line_name = line_picker(filters[0], ["all lines", *(line.name for line in lines)], key="labelling.line")
line_id = next((line.id for line in lines if line.name == line_name), None)
if mode == "label":
    label_phones(line_id)
else:
    if line_id is not None:
        with database.read() as session:
            waiting_ids = awaiting_adjudication(session=session, line_id=line_id)
    settle_disagreements(waiting_ids)

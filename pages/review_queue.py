"""Review queue: phones routed to a person, oldest first, one at a time per supervisor."""

from __future__ import annotations

import time

import streamlit as st

from app import state
from app.session import current_user
from app.widgets import annotated_image, box_tuples, local_time
from core.auth import PermissionDeniedError
from core.reviewing import decide, next_phone, skip
from core.vocabulary import Verdict
from db.live import model_boxes
from db.reviews import TaskNotHeldError

TASK_KEY = "review.task"
STARTED_KEY = "review.started"

database = state.database()
settings = state.settings()
user = current_user()
assert user is not None, "the entry point only shows this page to signed-in users"

st.title("Review queue")


def _take_next() -> None:
    try:
        st.session_state[TASK_KEY] = next_phone(database, user)
    except PermissionDeniedError as error:
        st.error(str(error))
        st.stop()
    st.session_state[STARTED_KEY] = time.monotonic()


def _judge(verdict: Verdict) -> None:
    item = st.session_state.get(TASK_KEY)
    if item is None:
        return
    seconds = time.monotonic() - st.session_state.get(STARTED_KEY, time.monotonic())
    try:
        decide(database, user, task_id=item.task_id, verdict=verdict, seconds_taken=round(seconds, 2))
        st.session_state["review.last"] = f"{item.serial}: {verdict.value} recorded."
    except TaskNotHeldError:
        st.session_state["review.last"] = f"{item.serial} was no longer yours (your claim expired); take the next one."
    st.session_state[TASK_KEY] = None


def _skip() -> None:
    item = st.session_state.get(TASK_KEY)
    if item is not None:
        skip(database, user, task_id=item.task_id)
    st.session_state[TASK_KEY] = None


if st.session_state.get(TASK_KEY) is None:
    _take_next()
item = st.session_state.get(TASK_KEY)

if last := st.session_state.pop("review.last", None):
    st.toast(last)

if item is None:
    st.success("Nothing waits for a person right now. New phones appear here as the worker routes them.")
    if st.button("Check again", key="review.refresh"):
        st.rerun()
    st.stop()

boxes = []
if item.show_model_boxes:
    with database.read() as session:
        boxes = model_boxes(session=session, inspection_id=item.inspection_id)
left, right = st.columns([3, 1])
with left:
    image = annotated_image(str(settings.data_dir / item.image_path), box_tuples(boxes))
    if image is None:
        st.warning("The photograph could not be read. Judge the phone itself at the station.")
    else:
        st.image(image, width="stretch")
with right:
    st.subheader(f"`{item.serial}`")
    st.caption(f"Captured {local_time(item.captured_at, settings.plant_timezone)} · {item.kind} · rule {item.rule}")
    if item.kind == "audit":
        st.info("Audit: the model has already decided this phone. Judge it as if it had not.")
    if item.show_model_boxes:
        st.caption(f"The model's boxes are shown ({len(boxes)}).")
    else:
        st.caption("Judge on your own: at this level the model's opinion is not shown.")
    st.button("PASS", key="review.pass", shortcut="P", type="secondary", width="stretch", on_click=_judge, args=(Verdict.PASS,))
    st.button("REJECT", key="review.reject", shortcut="X", type="primary", width="stretch", on_click=_judge, args=(Verdict.REJECT,))
    st.button("Skip (give back)", key="review.skip", shortcut="S", width="stretch", on_click=_skip)
    st.caption("Keys: P pass · X reject · S skip. The next phone loads at once.")

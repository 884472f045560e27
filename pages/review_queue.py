"""Review queue: phones routed to a person, oldest first, one at a time per supervisor.

A verdict can be taken back for a few seconds (Undo, key U) or corrected later with a reason; both
are new records linked to the verdict. A skipped phone goes to the back of this supervisor's queue.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import streamlit as st

from app import state
from app.focus import blur_after_click
from app.outage import guarded
from app.session import current_user
from app.widgets import annotated_image, box_tuples, line_picker, local_time
from core.auth import PermissionDeniedError
from core.ingest import NOT_STORED_PREFIX
from core.reviewing import UNDO_SECONDS, correct, decide, give_back, keep, my_recent_decisions, next_phone, skip, waiting
from core.routing import rule_in_words
from core.vocabulary import Verdict
from db.corrections import CorrectionError, DecisionView
from db.lines import list_lines
from db.live import model_boxes
from db.models import utcnow
from db.reviews import ReviewItem, TaskNotHeldError

TASK_KEY = "review.task"
STARTED_KEY = "review.started"
UNDO_KEY = "review.undo_offer"
LAST_KEY = "review.last"
REFRESH_KEY = "review.refresh_after_undo"
#: Set once the page has looked for a verdict to offer back after a reload (see _restore_undo).
RESTORED_KEY = "review.undo_restored"
#: What the last correction from the form came to: (failed, message), shown once under its button.
FIX_OUTCOME_KEY = "review.fix.outcome"
ALL_LINES = "all lines"
#: While the page shows a phone, its claim is renewed this often (a claim lasts db.reviews.CLAIM_SECONDS)...
KEEP_EVERY_SECONDS = 30.0
#: ...for at most this long: a phone left on an unattended screen goes back to the queue for others.
KEEP_AT_MOST_SECONDS = 600.0
#: With the queue empty, the page looks for newly routed phones this often.
EMPTY_CHECK_SECONDS = 3.0
#: How many phones waited (held by others) when the page last found none to take.
EMPTY_SEEN_KEY = "review.empty_seen"
DECISION_KEYS = ["review.pass", "review.reject", "review.skip", "review.undo"]


@dataclass(frozen=True)
class UndoOffer:
    """The verdict just given, which one click takes back until ``until`` (time.monotonic)."""

    human_decision_id: int
    serial: str
    verdict: Verdict
    until: float
    #: What became of an undo (shown in place of the button), None while none was asked for.
    outcome: str | None = None
    failed: bool = False


database = state.database()
settings = state.settings()
user = current_user()
assert user is not None, "the entry point only shows this page to signed-in users"

st.title("Review queue")

with database.read() as session:
    lines = list_lines(session=session)


def _line_id() -> int | None:
    name = st.session_state.get("review.line", ALL_LINES)
    return next((line.id for line in lines if line.name == name), None)


def _take_next() -> None:
    try:
        st.session_state[TASK_KEY] = next_phone(database, user, line_id=_line_id())
    except PermissionDeniedError as error:
        st.error(str(error))
        st.stop()
    st.session_state[STARTED_KEY] = time.monotonic()


def _on_screen(shown: ReviewItem) -> ReviewItem | None:
    """The phone on screen, if a button was pressed for it (not for one judged or skipped already)."""
    item: ReviewItem | None = st.session_state.get(TASK_KEY)
    return item if item is not None and item.task_id == shown.task_id else None


def _shown_now(shown: ReviewItem) -> ReviewItem | None:
    """The phone a verdict or skip was pressed for, if it is still the one on screen, long enough to have been seen.

    The buttons carry the phone they were drawn for. A key pressed twice in quick succession
    arrives either for the phone just judged (judged already: nothing to do) or, once the next phone
    is drawn, for a phone shown a fraction of a second: either way nothing is recorded, and the
    supervisor is told why.
    """
    item = _on_screen(shown)
    if item is None:
        st.session_state[LAST_KEY] = f"Not recorded: {shown.serial} was judged already (a key pressed twice?). The phone on screen now waits for you."
        return None
    seconds = time.monotonic() - st.session_state.get(STARTED_KEY, time.monotonic())
    if seconds < settings.review_min_look_s:
        st.session_state[LAST_KEY] = f"Not recorded: {item.serial} had been on screen for {seconds:.1f} s only (a key pressed twice?). Look at it, then decide."
        return None
    return item


def _judge(shown: ReviewItem, verdict: Verdict) -> None:
    item = _shown_now(shown)
    if item is None:
        return
    seconds = time.monotonic() - st.session_state.get(STARTED_KEY, time.monotonic())
    try:
        decision_id = decide(database, user, task_id=item.task_id, verdict=verdict, seconds_taken=round(seconds, 2))
    except TaskNotHeldError:
        # Short enough for a toast's three lines (the longer one was cut off at "view more").
        st.session_state[LAST_KEY] = f"Not recorded: {item.serial} was judged meanwhile (another tab or person) or its claim ran out."
        st.session_state.pop(UNDO_KEY, None)
    else:
        st.session_state[UNDO_KEY] = UndoOffer(decision_id, item.serial, verdict, time.monotonic() + UNDO_SECONDS)
        st.session_state.pop("review.fix.decision", None)  # "Correct one of your verdicts" starts from this one
    st.session_state[TASK_KEY] = None


def _skip(shown: ReviewItem) -> None:
    item = _on_screen(shown)
    if item is None:
        return  # pressed for a phone judged or skipped already: the phone on screen stays
    skip(database, user, task_id=item.task_id)
    st.session_state[LAST_KEY] = f"Skipped {item.serial}: it goes to the back of your queue (another supervisor may take it)."
    st.session_state[TASK_KEY] = None


def _undo() -> None:
    # A click inside the fragment reruns only the fragment: the outcome is shown there, not as a toast.
    offer: UndoOffer | None = st.session_state.get(UNDO_KEY)
    if offer is None or offer.outcome is not None:
        return
    other = Verdict.PASS if offer.verdict is Verdict.REJECT else Verdict.REJECT
    try:
        correct(database, user, human_decision_id=offer.human_decision_id, verdict=other)
    except CorrectionError as error:
        outcome, failed = f"{offer.serial}: not undone: {error}.", True
    else:
        where = "the audit log, under per-phone decisions and corrections"
        outcome, failed = f"{offer.serial}: {offer.verdict.value} undone, now {other.value} (the correction is in {where}).", False
    st.session_state[UNDO_KEY] = replace(offer, outcome=outcome, failed=failed)
    st.session_state[REFRESH_KEY] = True


def _restore_undo() -> None:
    """After a reload (a new session of the page) the verdict just given can still be taken back.

    The offer lived in the session and was lost with it; it is found again in the database, once
    per session: this reviewer's latest verdict, if it is younger than the undo window and not
    corrected since.
    """
    if st.session_state.get(RESTORED_KEY):
        return
    st.session_state[RESTORED_KEY] = True
    if st.session_state.get(UNDO_KEY) is not None:
        return
    try:
        latest = my_recent_decisions(database, user, limit=1)
    except PermissionDeniedError:
        return
    if not latest or latest[0].corrections:
        return
    left = UNDO_SECONDS - (utcnow() - latest[0].decided_at).total_seconds()
    if left >= 1.0:
        st.session_state[UNDO_KEY] = UndoOffer(latest[0].human_decision_id, latest[0].serial, latest[0].given, time.monotonic() + left)


def _change_line() -> None:
    """Another line: the phone held now goes back to the queue (not a skip), and the next comes from that line."""
    item = st.session_state.get(TASK_KEY)
    if item is not None:
        give_back(database, user, task_id=item.task_id)
    st.session_state[TASK_KEY] = None


def claim_keeper() -> None:
    """Keep the phone on screen this reviewer's while they look at it, and say so at once when it is not any more."""
    held: ReviewItem | None = st.session_state.get(TASK_KEY)
    if held is None:
        return
    looked = time.monotonic() - st.session_state.get(STARTED_KEY, time.monotonic())
    if looked >= KEEP_AT_MOST_SECONDS:
        st.warning(f"You have had {held.serial} for {looked / 60:.0f} minutes: it goes back to the queue for others soon. Judge it now, or skip it.")
        return
    if not keep(database, user, task_id=held.task_id):
        st.warning(f"{held.serial} is no longer yours: its claim ran out and someone else may have judged it. Your key takes the next phone.")


def undo_bar() -> None:
    """The last verdict, with a button that takes it back while the window is open (U)."""
    offer: UndoOffer | None = st.session_state.get(UNDO_KEY)
    if offer is None:
        return
    if st.session_state.pop(REFRESH_KEY, False):
        st.rerun(scope="app")  # the rest of the page (your verdicts, the countdown's timer) shows the correction too
    if offer.outcome is not None:
        (st.error if offer.failed else st.success)(offer.outcome)
        return
    left = offer.until - time.monotonic()
    if left <= 0:
        st.caption(f"{offer.serial}: {offer.verdict.value} recorded. To change it now, use *Correct one of your verdicts* below.")
        return
    other = Verdict.PASS if offer.verdict is Verdict.REJECT else Verdict.REJECT
    text, button = st.columns([3, 2], vertical_alignment="center")
    text.info(f"**{offer.serial}: {offer.verdict.value} recorded.** Wrong key? Take it back for {left:.0f} more s.")
    button.button(f"Undo: make it {other.value.upper()}", key="review.undo", shortcut="U", width="stretch", on_click=_undo)


def correction_form() -> None:
    """Correct one of your own earlier verdicts, with a reason: a new, linked record."""
    with st.expander("Correct one of your verdicts"):
        recent = my_recent_decisions(database, user)
        if not recent:
            st.caption("You have not judged a phone yet.")
            return
        chosen = st.selectbox(
            "Your verdict",
            recent,
            format_func=lambda d: (
                f"{d.serial} · {d.verdict.value}{' (corrected)' if d.corrections else ''} · {local_time(d.decided_at, settings.plant_timezone)}"
            ),
            key="review.fix.decision",
        )
        st.text_input("Why (kept in the audit log)", key="review.fix.reason")
        if chosen is None:
            return
        other = Verdict.PASS if chosen.verdict is Verdict.REJECT else Verdict.REJECT
        # In the button's callback, with the decision and verdict it was drawn for: once per click, and a
        # click on a verdict corrected meanwhile is refused ("already ...") rather than flipping it back.
        st.button(f"Change {chosen.serial} to {other.value}", key="review.fix.apply", on_click=_apply_correction, args=(chosen, other))
        if outcome := st.session_state.pop(FIX_OUTCOME_KEY, None):
            failed, message = outcome
            (st.error if failed else st.success)(message)


def _apply_correction(chosen: DecisionView, other: Verdict) -> None:
    try:
        correct(database, user, human_decision_id=chosen.human_decision_id, verdict=other, reason=st.session_state.get("review.fix.reason"))
    except CorrectionError as error:
        st.session_state[FIX_OUTCOME_KEY] = (True, f"{chosen.serial}: not changed: {error}.")
    else:
        message = f"{chosen.serial}: now {other.value}. The first verdict stays on record, with your correction linked to it."
        st.session_state[FIX_OUTCOME_KEY] = (False, message)
        st.session_state["review.fix.reason"] = ""  # the reason went with this correction, not the next


def queue_header() -> int:
    """The line filter, how many phones wait and how long the oldest has waited; returns how many wait."""
    names = [ALL_LINES, *(line.name for line in lines)]
    pick, count, age = st.columns([2, 1, 1], vertical_alignment="bottom")
    line_picker(pick, names, key="review.line", on_change=_change_line, help="A supervisor works one line: only its phones are offered.")
    summary = waiting(database, line_id=_line_id())
    count.metric("Waiting", summary.waiting)
    if summary.oldest_at is not None:
        seconds = max(0.0, (datetime.now(UTC) - summary.oldest_at).total_seconds())
        age.metric("Oldest waits", f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s")
    else:
        age.metric("Oldest waits", "-")
    return summary.waiting


waiting_now = queue_header()
if st.session_state.get(TASK_KEY) is None:
    _take_next()
item = st.session_state.get(TASK_KEY)

if last := st.session_state.pop(LAST_KEY, None):
    st.toast(last)
# The undo bar counts down on its own (a fragment rerun each second) only while an undo is on offer.
_restore_undo()
_offer = st.session_state.get(UNDO_KEY)
st.fragment(guarded(undo_bar), run_every=1.0 if _offer is not None and _offer.outcome is None else None)()
blur_after_click([*DECISION_KEYS, "review.line"], key="review.blur")
st.fragment(guarded(claim_keeper), run_every=KEEP_EVERY_SECONDS if item is not None else None)()


def arrivals_watch() -> None:
    """With nothing on screen: look for a routed phone every few seconds and show it when one comes.

    Only more phones than when the page found none to take rerun it: phones held by other
    supervisors count as waiting too, and would otherwise rerun the page every few seconds.
    """
    if waiting(database, line_id=_line_id()).waiting > st.session_state.get(EMPTY_SEEN_KEY, 0):
        st.rerun(scope="app")


if item is None:
    st.success(
        f"Nothing waits for a person right now. New phones appear here by themselves (checked every {EMPTY_CHECK_SECONDS:.0f} s) "
        "as the worker and the inspection service route them."
    )
    st.session_state[EMPTY_SEEN_KEY] = waiting_now  # counted by the header just now, before nothing could be taken
    st.fragment(guarded(arrivals_watch), run_every=EMPTY_CHECK_SECONDS)()
    if st.button("Check again", key="review.refresh"):
        st.rerun()
    correction_form()
    st.stop()

boxes = []
if item.show_model_boxes:
    with database.read() as session:
        boxes = model_boxes(session=session, inspection_id=item.inspection_id)
left, right = st.columns([2, 1])  # the serial fits on one line at 1440 px
with left:
    if item.refused_because is not None:
        # A person judging a black frame would pass a phone nobody saw: the page says the photo is not to be trusted.
        st.warning(f"The admission check refused this photograph ({item.refused_because}). It may not show the phone: judge the phone itself at the station.")
    image = annotated_image(str(settings.image_file(item.image_path)), box_tuples(boxes))
    if image is None and item.image_path.startswith(NOT_STORED_PREFIX):
        st.warning("The photograph was not stored: the image store could not take it (full or read-only). Judge the phone itself at the station.")
    elif image is None:
        st.warning("The photograph could not be read. Judge the phone itself at the station.")
    else:
        st.image(image, width="stretch")
with right:
    st.subheader(f"`{item.serial}`")
    why = rule_in_words(item.rule) or item.rule
    st.caption(f"{item.line_name} · captured {local_time(item.captured_at, settings.plant_timezone)} · {why}", help=f"routing rule `{item.rule}`")
    if item.skipped_at is not None:
        st.warning("You skipped this phone before; it is back because nothing else waits for you.")
    if item.kind == "audit":
        st.info("Audit: the model has already decided this phone. Judge it as if it had not.")
    if item.show_model_boxes:
        st.caption(f"The model's boxes are shown ({len(boxes)}).")
    else:
        st.caption("Judge on your own: at this level the model's opinion is not shown.")
    # The two verdicts look alike: a filled button would be the page's suggestion, and the person judges unprompted.
    # Each button carries the phone it was drawn for (see _shown_now).
    st.button("PASS", key="review.pass", shortcut="P", type="secondary", width="stretch", on_click=_judge, args=(item, Verdict.PASS))
    st.button("REJECT", key="review.reject", shortcut="X", type="secondary", width="stretch", on_click=_judge, args=(item, Verdict.REJECT))
    st.button("Skip (to the back)", key="review.skip", shortcut="S", width="stretch", on_click=_skip, args=(item,))
    st.caption(f"Keys: P pass · X reject · S skip · U undo (for {UNDO_SECONDS:.0f} s). The next phone loads at once.")
correction_form()

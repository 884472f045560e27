"""Live line: the control-room view of one line, refreshing itself while the worker and the service run.

Three fragments refresh on their own (the line's counters, the inspection service's answers, the
latest phones), each reading the database once and then drawing, so only what changed is redrawn
and the rest of the page never fades while it refreshes.
"""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from app import state
from app.outage import guarded
from app.session import current_user
from app.widgets import LEVEL_WORDS, box_tuples, labelled_thumbnail, line_picker, local_time, severe_drift_notice
from core.auth import Action, PermissionDeniedError, may, require
from core.routing import failsafe_in_words, rule_in_words
from db.gate import answer_summary, refused_posts, unrecorded_conflicts
from db.lines import FAILSAFE_ACTIONS, list_lines, set_answer_settings
from db.live import PhoneRow, latest_phones
from db.models import utcnow
from db.status import line_statuses, server_summary

REFRESH_SECONDS = 2.0
#: Why the prediction server refused a station's post (its error code), as the floor says it.
REFUSED_WORDS = {
    "unauthorized": "no key, or an unknown or revoked one",
    "forbidden": "a key of another line",
    "bad_request": "a form without what a post needs",
    "no_image": "no image",
    "bad_serial": "a missing or unreadable serial",
    "not_an_image": "a file that is not an image",
    "body_too_large": "over 25 MB",
    "serial_conflict": "a serial another phone of the line has",
}
#: How long a phone sent to the fail-safe under another phone's serial stays on the page (a shift).
CONFLICT_WINDOW = timedelta(hours=8)
PHONES_SHOWN = 6
GRID_COLUMNS = 3
#: The window of the service's answers summarised at the top.
ANSWER_WINDOW = timedelta(minutes=15)
FAILSAFE_WORDS = {"to_person": "to a person", "reject": "reject"}

database = state.database()
settings = state.settings()
user = current_user()

with database.read() as session:
    lines = list_lines(session=session)

st.title("Live line")
if not lines:
    st.info("No line yet. Run `shadowline init` to create `line-1` with the shipped model.")
    st.stop()

names = [line.name for line in lines]
line_name = line_picker(st, names, key="live.line")
line = next(line for line in lines if line.name == line_name)
severe_drift_notice(database, line.id)


def _decided(by_model: int, by_people: int) -> str:
    """Both as counts of the same whole: "decided by the model 12 of 40 (30.0%), by people 28"."""
    whole = by_model + by_people
    return f"decided by the model {by_model:,} of {whole:,} ({by_model / whole:.1%}), by people {by_people:,}" if whole else "nothing decided yet"


def _rate_metric(column, label: str, part: int, whole: int) -> None:
    """A rate with its count beside it (under the value, in grey): "32.7 %" over "18 of 55"."""
    column.metric(label, "—" if not whole else f"{part / whole:.1%}", delta=f"{part:,} of {whole:,}", delta_color="off", delta_arrow="off")


@st.fragment(run_every=REFRESH_SECONDS)
@guarded
def line_counters() -> None:
    with database.read() as session:
        status = next(s for s in line_statuses(session=session) if s.line == line.name)
    decided = status.verdicts["pass"] + status.verdicts["reject"]
    cols = st.columns(6)
    # The short name fits the narrow metric; the rung's name as the Automation page gives it goes under it.
    words = LEVEL_WORDS.get(status.level, status.level.replace("_", " "))
    short = status.level.replace("_", " ")
    cols[0].metric("Level", short, delta=words if words != short else None, delta_color="off", delta_arrow="off")
    cols[1].metric("Phones / min", f"{status.phones_per_min:.0f}")
    _rate_metric(cols[2], "Defect rate", status.verdicts["reject"], decided)
    cols[3].metric("Waiting for the model", status.queue_depth, help="Phones stored and queued, not yet inspected by the worker or the service.")
    cols[4].metric("Waiting for a person", status.open_review_tasks, help="Phones routed to people, in the Review queue.")
    cols[5].metric("Worker", "alive" if status.worker_alive else "DOWN")
    if not status.worker_alive:
        age = "never" if status.worker_heartbeat_age_s is None else f"{status.worker_heartbeat_age_s:.0f} s ago"
        st.error(f"No worker is running (last heartbeat {age}). Phones queue up until `shadowline worker` runs.")
    elif not status.model_status.startswith("ok"):
        st.warning(f"Model: {status.model_status}. Phones are routed to people meanwhile.")
    by_model, by_people = status.decided_by["model"], status.decided_by["human"]
    st.caption(
        f"Model {status.active_model or 'none'}"
        + (f" · candidate {status.candidate_model}" if status.candidate_model else "")
        + f" · {_decided(by_model, by_people)}"
        + (f" ({status.decided_by_simulation:,} of them by the simulated inspector)" if status.decided_by_simulation else "")
        + f", waiting {status.decided_by['pending']:,}"
        + f" · unreadable images {status.counts['failed']:,}"
    )


@st.fragment(run_every=REFRESH_SECONDS)
@guarded
def service_answers() -> None:
    with database.read() as session:
        summary = answer_summary(session=session, line_id=line.id, since=utcnow() - ANSWER_WINDOW)
        conflicts = unrecorded_conflicts(session=session, line_id=line.id, since=utcnow() - CONFLICT_WINDOW)
        refused = refused_posts(session=session, line_id=line.id, since=utcnow() - ANSWER_WINDOW)
        fresh = next((candidate for candidate in list_lines(session=session) if candidate.id == line.id), line)
        server_alive, server_words = server_summary(session=session)
    if server_alive is False:
        st.error(f"The prediction server does not answer ({server_words}): camera stations get no verdict. Start it with `shadowline serve`.")
    elif server_alive and server_words != "ready":
        st.warning(f"Prediction server {server_words}. Until it is ready the gate gets the fail-safe.")
    minutes = int(ANSWER_WINDOW.total_seconds() // 60)
    cols = st.columns(5)
    cols[0].metric(f"Gate answers ({minutes} min)", f"{summary.answers:,}")
    cols[1].metric("Answer time p50", "—" if summary.p50_ms is None else f"{summary.p50_ms:.0f} ms")
    slowest = None if summary.max_ms is None else f"slowest {summary.max_ms:.0f} ms"
    cols[2].metric("Answer time p99", "—" if summary.p99_ms is None else f"{summary.p99_ms:.0f} ms", delta=slowest, delta_color="off", delta_arrow="off")
    _rate_metric(cols[3], "Fail-safes", summary.failsafe_count, summary.answers)
    late = f"then {FAILSAFE_WORDS.get(fresh.failsafe_action, fresh.failsafe_action)}"
    cols[4].metric("Answer budget", f"{fresh.answer_budget_ms} ms", delta=late, delta_color="off", delta_arrow="off")
    if conflicts:
        which = ", ".join(f"{c.serial} ({c.at:%H:%M:%S}{', station ' + c.station if c.station else ''})" for c in conflicts[:5])
        more = f" and {len(conflicts) - 5} more" if len(conflicts) > 5 else ""
        one = len(conflicts) == 1
        phones = "A phone" if one else f"{len(conflicts)} phones"
        find = (
            "find it at the hold station, give it a serial of its own and post it again. Managers and admins find its image"
            if one
            else "find them at the hold station, give each a serial of its own and post it again. Managers and admins find each one's image"
        )
        st.error(
            f"{phones} went to the fail-safe under a serial another phone of this line already has: {which}{more}. "
            f"Not recorded, so not in the Review queue: {find} in the audit log."
        )
    if refused:
        total = sum(refused.values())
        why = "; ".join(f"{REFUSED_WORDS.get(code, code.replace('_', ' '))} ({n:,})" for code, n in sorted(refused.items(), key=lambda item: -item[1]))
        st.warning(
            f"The prediction server refused {total:,} post{'s' if total != 1 else ''} of phones for this line in {minutes} min: {why}. "
            "Nothing of those phones was recorded: the station sent each to the hold station, to be judged by hand there, not in the Review queue. "
            "Check the station's key and settings (`shadowline keys list`)."
        )
    if summary.failsafes:
        why = "; ".join(f"{failsafe_in_words(reason)} ({n:,})" for reason, n in sorted(summary.failsafes.items()))
        times = "once" if summary.failsafe_count == 1 else f"{summary.failsafe_count:,} times"
        acted = "rejected those phones" if fresh.failsafe_action == "reject" else "sent those phones to a person"
        st.warning(f"The gate acted on the fail-safe {times} in {minutes} min: {why}. It {acted}; each is in the review queue for a person's verdict.")
    elif not summary.answers:
        st.caption(f"No phone posted by a camera station in the last {minutes} min (`shadowline serve`, `shadowline station`).")


def answer_settings_editor() -> None:
    """The line's answer budget and fail-safe, changed by engineers and admins (audited)."""
    if user is None or not may(user.role, Action.EDIT_ANSWER_SETTINGS):
        return
    with st.popover("Change budget or fail-safe"), st.form("live.answer_form"):
        budget = st.number_input("Answer budget (ms)", min_value=1, max_value=60_000, value=int(line.answer_budget_ms), step=50, key="live.budget")
        failsafe = st.radio(
            "When no answer comes in time, the gate…",
            FAILSAFE_ACTIONS,
            index=FAILSAFE_ACTIONS.index(line.failsafe_action),
            format_func=lambda action: "sends the phone to a person" if action == "to_person" else "rejects the phone",
            key="live.failsafe",
            help="Never pass: a phone nobody judged is never passed.",
        )
        note = st.text_input("Why (kept in the audit log)", key="live.answer_note")
        if st.form_submit_button("Save"):
            try:
                if not (note or "").strip():
                    raise ValueError("say why in the note: it goes into the audit log with the change")
                require(user, Action.EDIT_ANSWER_SETTINGS)
                with database.write() as session:
                    set_answer_settings(session=session, line_id=line.id, actor=user.name, budget_ms=int(budget), failsafe_action=failsafe, note=note or None)
            except (PermissionDeniedError, ValueError) as error:
                st.error(str(error))
            else:
                st.success(f"{line.name}: answer budget {int(budget)} ms, fail-safe {FAILSAFE_WORDS[failsafe]}.")


def _disagrees(phone: PhoneRow) -> bool:
    """A person's final verdict (a decision or a correction) differs from the model's."""
    return bool(phone.verdict and phone.model_verdict and phone.model_verdict != phone.verdict)


def _phone_card(phone: PhoneRow) -> None:
    with st.container(border=True):
        image = labelled_thumbnail(str(settings.image_file(phone.image_path)), box_tuples(phone.boxes))
        if image is None:
            st.error(f"Unreadable image: {phone.error or 'could not decode'}")
        else:
            st.image(image, width="stretch")
        if phone.verdict:
            who = "the model" if phone.decided_by == "model" else "the simulated inspector" if phone.decided_by_simulation else "a person"
            badge = ":red[**REJECT**]" if phone.verdict == "reject" else ":green[**PASS**]"
            status = f"{badge} by {who}"
        elif phone.status in ("queued", "processing"):
            status = ":gray[inspecting…]"
        else:
            status = ":orange[**waiting for a person**]"
        # The verdict and the serial each on one line of their own (a serial cut or wrapped, the cards
        # looked alike or jumped); the reason below wraps, so none of it is hidden.
        st.markdown(status, wrap=False)
        st.caption(f"`{phone.serial}` · {local_time(phone.captured_at, settings.plant_timezone)}", wrap=False)
        if _disagrees(phone):
            other = "the simulated inspector" if phone.decided_by_simulation else "a person"
            st.markdown(f":orange-background[**Disagreement:** the model said {phone.model_verdict.upper()}, {other} {phone.verdict.upper()}]")
        st.caption(rule_in_words(phone.rule, admission_reason=phone.admission_reason) or phone.status)


@st.fragment(run_every=REFRESH_SECONDS)
@guarded
def latest_phones_grid() -> None:
    with database.read() as session:
        phones = latest_phones(session=session, line_id=line.id, limit=PHONES_SHOWN)
    if not phones:
        st.info("No phones yet. Start the simulated line with `shadowline simulate --line " + line.name + "` or drop images with `shadowline ingest`.")
        return
    disagreements = sum(1 for p in phones if _disagrees(p))
    st.markdown("**Latest phones**, newest first" + (f" · :orange[{disagreements} where a person overruled the model]" if disagreements else ""))
    # Row by row, so the cards of a row line up however tall one of them is.
    for start in range(0, len(phones), GRID_COLUMNS):
        for column, phone in zip(st.columns(GRID_COLUMNS), phones[start : start + GRID_COLUMNS], strict=False):
            with column:
                _phone_card(phone)


line_counters()
service_answers()
answer_settings_editor()
latest_phones_grid()

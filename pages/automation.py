"""Automation: each line's place on the ladder, the evidence for the next rung, and the manager's approvals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from app import state
from app.session import current_user
from app.widgets import FIELD_WORDS, line_picker, local_time, plain, severe_drift_notice
from core.auth import Action, PermissionDeniedError, may
from core.ladder import actions
from core.ladder.forecast import forecast
from core.ladder.gates import LADDER, MEANING, Status, next_rung
from db import audit
from db import ladder as ladder_db
from db.ladder import RequestError
from db.lines import list_lines

STATUS_TEXT = {Status.MET: "met", Status.NOT_MET: "NOT MET", Status.WAITING: "waiting for evidence"}

database = state.database()
settings = state.settings()
user = current_user()
assert user is not None
st.title("Automation")
st.caption(
    "Anyone may move a line down at once. Moving up needs the gate below the next rung to be met; "
    "moving into canary and into full automation also needs a manager's approval. "
    "Lines drop back by themselves when people override the model too often, a severe drift alarm fires, or the model fails."
)

with database.read() as session:
    lines = list_lines(session=session)
if not lines:
    st.info("No line yet: run `shadowline init`.")
    st.stop()
line_name = line_picker(st, [line.name for line in lines], key="automation.line")
line = next(line for line in lines if line.name == line_name)
here = actions.current_rung(line)
severe_drift_notice(database, line.id)

with database.read() as session:
    gate = actions.gate_for_next(session, line)
    pairs = ladder_db.evidence_pairs(session=session, line=line, count_simulated=settings.gates_count_simulated)
    all_pairs = ladder_db.evidence_pairs(session=session, line=line, count_simulated=True)
    pending = ladder_db.list_requests(session=session, pending_only=True)
    decided = ladder_db.decided_requests(session=session, since=datetime.now(UTC) - timedelta(days=7), limit=10)
    history, _ = audit.search(session=session, action_prefix="line.", text="level", limit=40)
    line_names = {str(known.id): known.name for known in lines}

# -- the slider ---------------------------------------------------------------------------------
labels = [rung.label for rung in LADDER]
st.subheader(f"{line.name}: {here.label}")
st.caption(MEANING[line.level] + (f" Since {local_time(line.level_since, settings.plant_timezone, '%Y-%m-%d %H:%M')}." if line.level_since else ""))
# The key names the line and its rung: once the line moves, the slider starts again from where the line is.
slider_key = f"automation.slider.{line.name}.{here.key}"


def _back_to_the_line(key: str = slider_key, label: str = here.label) -> None:
    """Put the slider back on the rung the line is on (after a move, a request, a refusal or Cancel)."""
    st.session_state[key] = label


def _move(to_key: str, key: str = slider_key, label: str = here.label) -> None:
    to = next(rung for rung in LADDER if rung.key == to_key)
    note = (st.session_state.get("automation.note") or "").strip()
    if to.order() > here.order() and not note:
        # Up the ladder gives the model more say: the audit log keeps why, beside the gate's figures. A move down
        # (dropping back in a hurry) needs none.
        st.session_state["automation.refusal"] = f"Not moved: a move up to {to.label} needs a note (why now), for the audit log."
        return
    try:
        outcome = actions.move(database, user, line_name=line.name, to=to, note=note or None)
    except (actions.LadderError, PermissionDeniedError) as error:
        st.session_state["automation.refusal"] = f"Refused: {error}"
    else:
        st.session_state["automation.flash"] = outcome.message
        st.session_state["automation.note"] = ""  # used: the next move gets its own
    st.session_state[key] = label  # the slider never stays on a rung the line is not on


# The slider's value lives in the session only (no default argument as well): callbacks set it back to the line's rung.
st.session_state.setdefault(slider_key, here.label)
chosen_label = st.select_slider("Automation level", options=labels, key=slider_key)
chosen = LADDER[labels.index(chosen_label)]
if chosen.key != here.key:
    going_up = chosen.order() > here.order()
    above = next_rung(here)
    if going_up and (above is None or chosen.key != above.key):
        st.info(f"One rung at a time: from {here.label} the next is {above.label if above else 'nothing'}.")
        st.button("Back to where the line is", key="automation.cancel", on_click=_back_to_the_line)
    else:
        needs_manager = going_up and gate is not None and gate.gate.needs_manager
        verb = "Request" if needs_manager else "Move"
        st.text_input("Note (why)" + (" — required for a move up" if going_up else ", optional"), key="automation.note")
        act, cancel = st.columns([3, 1])
        act.button(f"{verb}: {here.label} → {chosen.label}", type="primary", key="automation.move", on_click=_move, args=(chosen.key,))
        cancel.button("Cancel", key="automation.cancel", on_click=_back_to_the_line)
        if needs_manager:
            st.caption(f"Moving into {chosen.label} needs a manager: this records a request, and the line stays at {here.label} until it is approved.")
if refusal := st.session_state.pop("automation.refusal", None):
    st.error(refusal)
if flash := st.session_state.pop("automation.flash", None):
    st.success(flash)

st.dataframe(
    pd.DataFrame(
        [
            {
                "": "▶" if rung.key == here.key else "",
                "rung": rung.label,
                "who decides": MEANING[rung.level],
                "needs a manager": "yes" if rung.key in ("canary", "full") else "",
            }
            for rung in LADDER
        ]
    ),
    hide_index=True,
    key="automation.levels",
)

# -- the evidence for the next rung -------------------------------------------------------------
st.subheader("The next rung")
if gate is None:
    st.info("Full automation is the top of the ladder. People still audit a random sample of phones.")
else:
    summary = f"**{gate.target.label}**: {gate.summary}."
    {Status.MET: st.success, Status.NOT_MET: st.error, Status.WAITING: st.warning}[gate.status](summary)
    st.dataframe(
        pd.DataFrame([{"criterion": c.name, "measured": c.measured, "needs": c.needs, "status": STATUS_TEXT[c.status]} for c in gate.criteria]),
        hide_index=True,
        key="automation.gate",
        width="stretch",
        column_config={"status": st.column_config.TextColumn("status", width="medium"), "measured": st.column_config.TextColumn("measured", width="large")},
    )
    times = [moment.to_pydatetime() for moment in pairs["decided_at"]] if not pairs.empty else []
    outlook = forecast(times, need=gate.gate.min_pairs, since=line.level_since, now=datetime.now(UTC))
    st.caption(outlook.text + ".")
    simulated = ladder_db.simulated_judged(all_pairs)
    if settings.gates_count_simulated:
        st.warning(
            (
                f"Simulated judgements are counted: {simulated:,} of these {len(all_pairs):,} phones were judged by the simulated inspector. "
                if len(all_pairs)
                else "Simulated judgements are counted. "
            )
            + "This installation is a demonstration (SHADOWLINE_GATES_COUNT_SIMULATED=true); a plant counts only people and labels."
        )
    st.caption(
        "Evidence counts only phones judged by both a person and the active model since the line reached its current rung"
        + (
            f"; the simulated inspector's judgements are not counted ({simulated} phones left out)."
            if not settings.gates_count_simulated and simulated
            else ", and an engineer's label where there is one."
        )
    )

# -- requests, on every line --------------------------------------------------------------------


def _decide(request: ladder_db.RequestView, approving: bool) -> None:
    """A manager's answer to one request, with the note typed beside it."""
    note = st.session_state.get(f"automation.decision_note.{request.id}") or None
    try:
        if approving:
            message = actions.approve(database, user, request_id=request.id, note=note).message
        else:
            actions.refuse(database, user, request_id=request.id, note=note or "")
            message = f"Request #{request.id} refused; {request.requested_by} sees your note."
    except (actions.LadderError, RequestError, PermissionDeniedError, ValueError) as error:
        st.session_state[f"automation.decision_error.{request.id}"] = f"{'Not approved' if approving else 'Not refused'}: {error}"
    else:
        st.session_state["automation.flash"] = message


st.subheader("Requests waiting for a manager")
if not pending:
    st.caption("None, on any line.")
for request in pending:
    when = local_time(request.requested_at, settings.plant_timezone, "%Y-%m-%d %H:%M")
    with st.container(border=True):
        st.markdown(
            f"**Request #{request.id}** · **{request.line}**: {request.what}, asked by {request.requested_by} at {when}"
            + (f": _{request.note}_" if request.note else "")
        )
        if request.kind == "level" and request.evidence.get("criteria"):
            evidence = pd.DataFrame(request.evidence["criteria"]).rename(columns={"name": "criterion"})
            st.dataframe(evidence, hide_index=True, key=f"automation.req_evidence.{request.id}")
        if may(user.role, Action.APPROVE_PROMOTION):
            st.text_input(
                "Decision note", key=f"automation.decision_note.{request.id}", help="Required to approve or refuse: what you checked, for the audit log."
            )
            approve_col, refuse_col = st.columns(2)
            # Both in the buttons' callbacks, for the request they were drawn for: once per click.
            approve_col.button(f"Approve #{request.id}", type="primary", key=f"automation.approve.{request.id}", on_click=_decide, args=(request, True))
            refuse_col.button(f"Refuse #{request.id}", key=f"automation.refuse.{request.id}", on_click=_decide, args=(request, False))
            if problem := st.session_state.pop(f"automation.decision_error.{request.id}", None):
                st.error(problem)
        else:
            st.caption("A manager approves or refuses it.")
if decided:
    st.markdown("**Decided in the last 7 days**")
    st.dataframe(
        pd.DataFrame(
            [
                {
                    "request": f"#{r.id}",
                    "line": r.line,
                    "asked": r.what,
                    "asked by": r.requested_by,
                    "answer": r.status,
                    "by": r.decided_by or "",
                    "note": r.decision_note or "",
                    "when": local_time(r.decided_at, settings.plant_timezone, "%Y-%m-%d %H:%M") if r.decided_at else "",
                }
                for r in decided
            ]
        ),
        hide_index=True,
        key="automation.decided",
    )

# -- history ------------------------------------------------------------------------------------
with st.expander("Recent level changes (all lines)"):
    history = history[history["action"] != "line.move_refused"].head(20)  # attempts the gate refused: in the audit log
    if history.empty:
        st.caption("None yet.")
    else:
        shown = pd.DataFrame(
            {
                "when": history["at"].map(lambda t: local_time(t, settings.plant_timezone, "%Y-%m-%d %H:%M")),
                "who": history["actor"],
                "line": history["entity_id"].astype(str).map(lambda i: line_names.get(i, i)),
                "from": history["before"].map(plain),
                "to": history["after"].map(plain),
                "why": history["note"].fillna(""),
            }
        )
        st.dataframe(shown, hide_index=True, key="automation.history")
with st.expander("The plant's gates"):
    with database.read() as session:
        config = ladder_db.get_gate_config(session=session)
    editable = may(user.role, Action.EDIT_SETTINGS)
    frame = pd.DataFrame([{"into": key, **vars(value)} for key, value in config.gates.items()]).set_index("into")
    with st.form("automation.gates_form"):
        words = {name: st.column_config.Column(FIELD_WORDS.get(name, name.replace("_", " "))) for name in frame.columns}
        edited = st.data_editor(frame, disabled=not editable, key="automation.gates", column_config={"_index": st.column_config.Column("into rung"), **words})
        rule = config.rollback
        cols = st.columns(2)
        max_disagreement = cols[0].number_input(
            "Rollback when overrides exceed",
            min_value=0.0,
            max_value=1.0,
            value=rule.max_disagreement,
            step=0.01,
            disabled=not editable,
            key="automation.rb_max",
        )
        min_pairs = cols[1].number_input("…after at least (phones)", min_value=1, value=rule.min_pairs, disabled=not editable, key="automation.rb_min")
        gates_note = st.text_input("Why the change", disabled=not editable, key="automation.gates_note")
        if st.form_submit_button("Save gates", disabled=not editable):
            assignments = [f"rollback.max_disagreement={max_disagreement}", f"rollback.min_pairs={int(min_pairs)}"]
            for key, row in edited.iterrows():
                for name, value in row.items():
                    if name == "needs_manager":
                        continue  # which moves need a manager is the product's rule, not a setting
                    assignments.append(f"{key}.{name}={'none' if pd.isna(value) else value}")
            try:
                actions.set_gates(database, user, assignments=assignments, note=gates_note or None)
            except (ValueError, PermissionDeniedError) as error:
                st.error(str(error))
            else:
                st.rerun()
    rollback_text = (
        "Automatic rollback is OFF (turned off by an admin, see the audit log). "
        if rule.max_disagreement is None
        else f"Automatic rollback in canary and full automation: when people override the model on more than {rule.max_disagreement:.0%} of phones "
        f"(95 % lower bound, after at least {rule.min_pairs} phones judged by both), the line drops to {rule.to_level.value}. "
    )
    st.caption(
        rollback_text + ("Every change is audited." if editable else "An admin changes these (here or with `shadowline gates --set`); every change is audited.")
    )

"""Automation: each line's place on the ladder, the evidence for the next rung, and the manager's approvals."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import state
from app.session import current_user
from app.widgets import local_time, severe_drift_notice
from core.auth import Action, PermissionDeniedError, may
from core.ladder import actions
from core.ladder.gates import LADDER, MEANING, Status
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
line_name = st.selectbox("Line", [line.name for line in lines], key="automation.line")
line = next(line for line in lines if line.name == line_name)
here = actions.current_rung(line)
severe_drift_notice(database, line.id)

with database.read() as session:
    gate = actions.gate_for_next(session, line)
    pending = ladder_db.list_requests(session=session, line_id=line.id, pending_only=True)
    history, _ = audit.search(session=session, action_prefix="line.", text="level", limit=20)

# -- the slider ---------------------------------------------------------------------------------
labels = [rung.label for rung in LADDER]
st.subheader(f"{line.name}: {here.label}")
st.caption(MEANING[line.level] + (f" Since {local_time(line.level_since, settings.plant_timezone, '%Y-%m-%d %H:%M')}." if line.level_since else ""))
# The key names the current rung: once the line moves, the slider starts again from where the line is.
chosen_label = st.select_slider("Automation level", options=labels, value=here.label, key=f"automation.slider.{line.name}.{here.key}")
chosen = LADDER[labels.index(chosen_label)]
if chosen.key != here.key:
    going_up = chosen.order() > here.order()
    verb = "Request" if going_up and gate is not None and gate.target.key == chosen.key and gate.gate.needs_manager else "Move"
    note = st.text_input("Note (why)", key="automation.note")
    if st.button(f"{verb}: {here.label} → {chosen.label}", type="primary", key="automation.move"):
        try:
            outcome = actions.move(database, user, line_name=line.name, to=chosen, note=note or None)
        except (actions.LadderError, PermissionDeniedError) as error:
            st.error(f"Refused: {error}")
        else:
            st.session_state["automation.flash"] = outcome.message
            st.rerun()
flash = st.session_state.pop("automation.flash", None)
if flash:
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
    )
    st.caption("Evidence counts only phones judged by both a person and the active model since the line reached its current rung.")

# -- requests -----------------------------------------------------------------------------------
st.subheader("Requests waiting for a manager")
if not pending:
    st.caption("None.")
for request in pending:
    target = (
        f"switch the model to {request.evidence.get('to')}"
        if request.kind == "model_switch"
        else f"move to {request.to_level}" + (f" {request.to_share:.0%}" if request.to_share else "")
    )
    when = local_time(request.requested_at, settings.plant_timezone, "%Y-%m-%d %H:%M")
    with st.container(border=True):
        st.markdown(f"**Request #{request.id}**: {target}, asked by {request.requested_by} at {when}" + (f": _{request.note}_" if request.note else ""))
        if request.kind == "level" and request.evidence.get("criteria"):
            st.dataframe(pd.DataFrame(request.evidence["criteria"]), hide_index=True, key=f"automation.req_evidence.{request.id}")
        if may(user.role, Action.APPROVE_PROMOTION):
            decision_note = st.text_input("Decision note", key=f"automation.decision_note.{request.id}")
            approve_col, refuse_col = st.columns(2)
            if approve_col.button(f"Approve #{request.id}", type="primary", key=f"automation.approve.{request.id}"):
                try:
                    outcome = actions.approve(database, user, request_id=request.id, note=decision_note or None)
                except (actions.LadderError, RequestError, PermissionDeniedError, ValueError) as error:
                    st.error(f"Not approved: {error}")
                else:
                    st.session_state["automation.flash"] = outcome.message
                    st.rerun()
            if refuse_col.button(f"Refuse #{request.id}", key=f"automation.refuse.{request.id}"):
                try:
                    actions.refuse(database, user, request_id=request.id, note=decision_note)
                except (actions.LadderError, RequestError, PermissionDeniedError) as error:
                    st.error(str(error))
                else:
                    st.rerun()
        else:
            st.caption("A manager approves or refuses it.")

# -- history ------------------------------------------------------------------------------------
with st.expander("Recent level changes (all lines)"):
    if history.empty:
        st.caption("None yet.")
    else:
        shown = history.assign(line=history["entity_id"], before=history["before"].astype(str), after=history["after"].astype(str))
        st.dataframe(shown[["at", "actor", "line", "before", "after", "note"]], hide_index=True, key="automation.history")
with st.expander("The plant's gates"):
    with database.read() as session:
        config = ladder_db.get_gate_config(session=session)
    editable = may(user.role, Action.EDIT_SETTINGS)
    frame = pd.DataFrame([{"into": key, **vars(value)} for key, value in config.gates.items()]).set_index("into")
    with st.form("automation.gates_form"):
        edited = st.data_editor(frame, disabled=not editable, key="automation.gates")
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

"""Audit log: every state change with who, when, before and after; searchable and exportable."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

from app import state
from app.session import current_user
from app.widgets import changes, local_time, plain
from core.auth import Action, PermissionDeniedError, require
from db.audit import ACTION_KINDS, actors, search
from db.labels import serials_of
from db.lines import list_lines
from db.registry import version_names

PAGE_SIZE = 50
EXPORT_LIMIT = 100_000
WINDOWS = {"last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7), "last 30 days": timedelta(days=30), "all time": None}

database = state.database()
settings = state.settings()
user = current_user()
try:
    require(user, Action.VIEW_AUDIT)
except PermissionDeniedError as error:
    st.error(str(error))
    st.stop()

st.title("Audit log")
with database.read() as session:
    known_actors = actors(session=session)
filters = st.columns([2, 2, 1, 1, 1])
text = filters[0].text_input("Search", placeholder="action, line, model, user, note…", key="audit.text")
kind = filters[1].selectbox(
    "Kind of action", list(ACTION_KINDS), key="audit.kind", help="Per-phone decisions (thousands a day) are left out unless you ask for them."
)
actor = filters[2].selectbox("Who", ["anyone", *known_actors], key="audit.actor")
window = filters[3].selectbox("When", list(WINDOWS), index=3, key="audit.window")
page = filters[4].number_input("Page", min_value=1, value=1, step=1, key="audit.page")

since = datetime.now(UTC) - WINDOWS[window] if WINDOWS[window] else None
query = {"text": text.strip(), "actor": None if actor == "anyone" else actor, "since": since, "kind": kind}
with database.read() as session:
    entries, total = search(session=session, offset=(int(page) - 1) * PAGE_SIZE, limit=PAGE_SIZE, **query)

if total == 0:
    hidden = ""
    if text.strip() and ACTION_KINDS[kind] is None:
        with database.read() as session:
            per_phone = search(session=session, limit=1, **{**query, "kind": "per-phone decisions and corrections"})[1]
        if per_phone:
            hidden = f' {per_phone:,} per-phone entr{"y" if per_phone == 1 else "ies"} match: choose "per-phone decisions and corrections" to see them.'
    st.info("No entry matches." + (hidden or " Every change of level, model, setting, user, decision or label is recorded here."))
    st.stop()
pages = (total + PAGE_SIZE - 1) // PAGE_SIZE
st.caption(f"{total:,} entr{'y' if total == 1 else 'ies'} · page {min(int(page), pages)} of {pages} · times in {settings.plant_timezone}")
# Ids in words: a model by its version, a line by its name, a phone by its serial.
phone_ids = [int(i) for e, i in zip(entries["entity"], entries["entity_id"], strict=True) if e == "inspection" and str(i).isdigit()]
with database.read() as session:
    model_names = version_names(session=session)
    line_names = {str(line.id): line.name for line in list_lines(session=session)}
    serials = {str(k): v for k, v in serials_of(session=session, inspection_ids=phone_ids).items()} if phone_ids else {}
names = {"line": line_names, "inspection": serials}
# Of a settings table changed, only what changed (the whole table was cut off at the right edge).
changed = [changes(before, after) for before, after in zip(entries["before"], entries["after"], strict=True)]
entries = entries.assign(before=[c[0] for c in changed], after=[c[1] for c in changed])
shown = entries.assign(
    at=entries["at"].map(lambda t: local_time(t, settings.plant_timezone, "%Y-%m-%d %H:%M:%S")),
    entity_id=[names.get(e, {}).get(str(i), i) for e, i in zip(entries["entity"], entries["entity_id"], strict=True)],
    entity=entries["entity"].replace({"inspection": "phone"}),
    note=entries["note"].fillna(""),
    before=entries["before"].map(lambda value: plain(value, settings.plant_timezone, model_names)),
    after=entries["after"].map(lambda value: plain(value, settings.plant_timezone, model_names)),
).rename(columns={"at": "when", "actor": "who", "entity": "what", "entity_id": "which", "note": "why"})
# The note beside the action it explains: at 1440 px the before and after, often long, come last.
shown = shown[["when", "who", "action", "what", "which", "why", "before", "after"]]
st.caption("Click a row to read its whole before and after below the table.")
picked = st.dataframe(
    shown,
    hide_index=True,
    key="audit.table",
    on_select="rerun",
    selection_mode="single-row",
    height=min(40 + 35 * len(shown), 900),
    # Wide enough for a full time and a station's name ("station:camera-1@line-2"); the long texts wrap into the rest.
    column_config={
        "when": st.column_config.TextColumn(width=150),
        "who": st.column_config.TextColumn(width=170),
        "action": st.column_config.TextColumn(width=190),
        "what": st.column_config.TextColumn(width=90),
        "which": st.column_config.TextColumn(width=170),
        "why": st.column_config.TextColumn(width=220),
    },
)
# At 1440 px the before and after get what is left of the width: a long one is read here in full.
chosen_rows = picked.selection.rows if picked is not None else []
if chosen_rows and chosen_rows[0] < len(shown):
    entry = shown.iloc[chosen_rows[0]]
    why = f" — why: {entry['why']}" if entry["why"] else ""
    st.markdown(f"**{entry['when']} · {entry['who']} · {entry['action']}** on {entry['what']} {entry['which']}{why}")
    before_column, after_column = st.columns(2)
    before_column.markdown("**Before**")
    before_column.text(entry["before"] or "(nothing)")
    after_column.markdown("**After**")
    after_column.text(entry["after"] or "(nothing)")


@st.cache_data(ttl=30, max_entries=8, show_spinner=False)
def _csv(text: str, actor: str | None, since: datetime | None, kind: str) -> bytes:
    with database.read() as session:
        frame, _ = search(session=session, text=text, actor=actor, since=since, kind=kind, limit=EXPORT_LIMIT)
    frame = frame.assign(
        at=frame["at"].map(lambda t: t.isoformat()), before=frame["before"].map(plain), after=frame["after"].map(plain), entity_id=frame["entity_id"].fillna("")
    )
    return frame.to_csv(index=False).encode()


_exported = min(total, EXPORT_LIMIT)
_what = "entry" if _exported == 1 else "entries"
st.download_button(f"Export {_exported:,} {_what} as CSV", _csv(**query), file_name="shadowline-audit.csv", mime="text/csv", key="audit.export")

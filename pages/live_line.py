"""Live line: the control-room view of one line, refreshing itself while the worker runs."""

from __future__ import annotations

import streamlit as st

from app import state
from app.widgets import annotated_image, box_tuples, local_time, severe_drift_notice
from db.lines import list_lines
from db.live import latest_phones
from db.status import line_statuses

REFRESH_SECONDS = 2.0
PHONES_SHOWN = 8

database = state.database()
settings = state.settings()

with database.read() as session:
    lines = list_lines(session=session)

st.title("Live line")
if not lines:
    st.info("No line yet. Run `shadowline init` to create `line-1` with the shipped model.")
    st.stop()

names = [line.name for line in lines]
line_name = st.selectbox("Line", names, key="live.line")
line = next(line for line in lines if line.name == line_name)
severe_drift_notice(database, line.id)


@st.fragment(run_every=REFRESH_SECONDS)
def live_view() -> None:
    with database.read() as session:
        status = next(s for s in line_statuses(session=session) if s.line == line.name)
        phones = latest_phones(session=session, line_id=line.id, limit=PHONES_SHOWN)

    decided = status.verdicts["pass"] + status.verdicts["reject"]
    defect_rate = status.verdicts["reject"] / decided if decided else None
    cols = st.columns(6)
    cols[0].metric("Level", status.level.replace("_", " "))
    cols[1].metric("Phones / min", f"{status.phones_per_min:.0f}")
    cols[2].metric("Defect rate", "—" if defect_rate is None else f"{defect_rate:.1%}")
    cols[3].metric("Queue", status.queue_depth)
    cols[4].metric("Waiting for a person", status.open_review_tasks)
    cols[5].metric("Worker", "alive" if status.worker_alive else "DOWN")
    if not status.worker_alive:
        age = "never" if status.worker_heartbeat_age_s is None else f"{status.worker_heartbeat_age_s:.0f} s ago"
        st.error(f"No worker is running (last heartbeat {age}). Phones queue up until `shadowline worker` runs.")
    elif not status.model_status.startswith("ok"):
        st.warning(f"Model: {status.model_status}. Phones are routed to people meanwhile.")
    st.caption(
        f"Model {status.active_model or 'none'}"
        + (f" · candidate {status.candidate_model}" if status.candidate_model else "")
        + f" · decided by model {status.decided_by['model']}, by people {status.decided_by['human']}, waiting {status.decided_by['pending']}"
        + f" · unreadable images {status.counts['failed']}"
    )

    if not phones:
        st.info("No phones yet. Start the simulated line with `shadowline simulate --line " + line.name + "` or drop images with `shadowline ingest`.")
        return
    grid = st.columns(4)
    for i, phone in enumerate(phones):
        with grid[i % 4]:
            image = annotated_image(str(settings.data_dir / phone.image_path), box_tuples(phone.boxes))
            if image is None:
                st.error(f"Unreadable image: {phone.error or 'could not decode'}")
            else:
                st.image(image, width="stretch")
            if phone.verdict:
                who = "model" if phone.decided_by == "model" else "person"
                badge = ":red[**REJECT**]" if phone.verdict == "reject" else ":green[**PASS**]"
                st.markdown(f"{badge} by {who} · `{phone.serial}`")
            elif phone.status in ("queued", "processing"):
                st.markdown(f":gray[inspecting…] · `{phone.serial}`")
            else:
                st.markdown(f":orange[**waiting for a person**] · `{phone.serial}`")
            if phone.admission_reason:
                st.markdown(f":orange[Not like the model's reference: {phone.admission_reason}]")
            st.caption(f"{local_time(phone.captured_at, settings.plant_timezone)} · {phone.rule or phone.status}")


live_view()

"""Drift: is the line still seeing what the model was trained on? Metrics against the reference, alarms."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.session import current_user
from app.widgets import line_from_url, line_picker, local_time
from core.auth import Action, PermissionDeniedError, may
from core.drift import actions
from core.drift.metrics import METRIC_BY_NAME, METRICS, DriftConfig, Family, MetricKind
from core.drift.monitor import DriftMonitor
from core.imaging import InvalidImageError, read_image
from core.vocabulary import AutomationLevel
from db import drift as drift_db
from db.lines import list_lines

WINDOWS = {"last hour": timedelta(hours=1), "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7), "all time": None}
VERDICT_ICON = {"ok": "ok", "drift": "DRIFT", "inconclusive": "inconclusive"}
KIND_LABEL = {MetricKind.INPUT: "inputs", MetricKind.OUTPUT: "model outputs", MetricKind.HUMAN: "people vs model", MetricKind.SOFTWARE: "system"}


@st.cache_resource(show_spinner=False)
def _monitor(database_url: str) -> DriftMonitor:
    """One monitor per database: it keeps references loaded between reruns."""
    return DriftMonitor(state.database())


def monitor() -> DriftMonitor:
    return _monitor(state.settings().database_url)


database = state.database()
settings = state.settings()
user = current_user()
assert user is not None
st.title("Drift")
st.caption("Each metric of the line's latest phones against the reference. Too few phones is *inconclusive*, never *ok*.")

with database.read() as session:
    lines = list_lines(session=session)
if not lines:
    st.info("No line yet: run `shadowline init`.")
    st.stop()

with database.read() as session:
    waiting_incidents = drift_db.current_incidents(session=session, unacknowledged_only=True)
line_from_url("drift.line", [line.name for line in lines])  # before the default below: a reload keeps the line chosen
if "drift.line" not in st.session_state:
    # Open on the line whose alarms wait for someone (the most severe first), else on one still drifting.
    with database.read() as session:
        first = waiting_incidents or drift_db.current_incidents(session=session)
    if first:
        st.session_state["drift.line"] = first[0].line
filters = st.columns([1, 1, 1, 2])
line_name = line_picker(filters[0], [line.name for line in lines], key="drift.line")
line = next(line for line in lines if line.name == line_name)
with database.read() as session:
    models = drift_db.checked_models(session=session, line_id=line.id)
if line.active_model_id is not None and line.active_model_version is not None:
    models.setdefault(line.active_model_id, line.active_model_version)
model_ids = sorted(models, key=lambda i: i != line.active_model_id)
model_id = filters[1].selectbox(
    "Model (charts)", model_ids, format_func=lambda i: models[i] + (" (active)" if i == line.active_model_id else ""), key="drift.model"
)
window_label = filters[2].selectbox("Time range of the charts", list(WINDOWS), index=1, key="drift.window")
metric_names = [spec.name for spec in METRICS]
metric = filters[3].selectbox(
    "Metric", metric_names, format_func=lambda name: f"{METRIC_BY_NAME[name].label} ({KIND_LABEL[METRIC_BY_NAME[name].kind]})", key="drift.metric"
)
since = datetime.now(UTC) - WINDOWS[window_label] if WINDOWS[window_label] else None
spec = METRIC_BY_NAME[metric]

with database.read() as session:
    config = drift_db.get_config(session=session, line_id=line.id)
    history = drift_db.check_history(session=session, line_id=line.id, since=since, model_version_id=model_id)
    past_alarms = drift_db.alarm_history(session=session, line_id=line.id, since=since)
report, window_sample = monitor().evaluate_with_window(line.name, config=config)

# -- alarms, one incident per cause -------------------------------------------------------------
st.subheader("Alarms")
with database.read() as session:
    incidents = drift_db.current_incidents(session=session, line_id=line.id)
if not incidents:
    st.success(f"No open alarm on {line.name}.")
order = {spec.name: i for i, spec in enumerate(METRICS)}
for incident in incidents:
    opened = local_time(incident.opened_at, settings.plant_timezone, "%Y-%m-%d %H:%M")
    state_text = f"acknowledged by {incident.acknowledged_by}: {incident.acknowledgement_note}" if incident.acknowledged else "not acknowledged"
    related = ", ".join(a.label for a in incident.alarms if a.id != incident.headline.id)
    text = (
        f"**Incident #{incident.id} · {incident.title}** since {opened}"
        + (f", with {incident.related} related metric{'s' if incident.related != 1 else ''}: {related}" if incident.related else "")
        + ("" if incident.ongoing else ". Every metric is back to normal")
        + f". ({state_text})"
    )
    (st.error if incident.severity == "severe" and not incident.acknowledged else st.warning)(text)
    with st.expander(f"The {len(incident.alarms)} alarm{'s' if len(incident.alarms) != 1 else ''} of incident #{incident.id}"):
        for alarm in sorted(incident.alarms, key=lambda a: (a.severity != "severe", a.acknowledged, order.get(a.metric, 99))):
            raised = local_time(alarm.raised_at, settings.plant_timezone, "%Y-%m-%d %H:%M")
            alarm_state = f"acknowledged by {alarm.acknowledged_by}: {alarm.acknowledgement_note}" if alarm.acknowledged else "not acknowledged"
            cleared = f" Back to normal since {local_time(alarm.cleared_at, settings.plant_timezone)}." if alarm.cleared_at else ""
            action = f" The monitor {alarm.action}." if alarm.action else ""
            st.markdown(f"**#{alarm.id} {alarm.severity.upper()} · {alarm.label}** since {raised}: {alarm.reason}.{action}{cleared} ({alarm_state})")
waiting = [alarm for incident in incidents for alarm in incident.alarms if not alarm.acknowledged]
SELECTION_KEY = "drift.ack_selection"  # {line: [alarm ids]}: kept across lines and failed submits (widget state is not)
if waiting and may(user.role, Action.ACKNOWLEDGE_ALARM):
    remembered = st.session_state.setdefault(SELECTION_KEY, {})
    waiting_ids = [a.id for a in waiting]
    labels = {a.id: f"#{a.id} {a.label} (incident #{a.incident_id})" for a in waiting}
    default = [i for i in remembered.get(line.name, waiting_ids) if i in waiting_ids]
    ack_key = f"drift.ack_ids.{line.name}"
    if ack_key not in st.session_state:
        st.session_state[ack_key] = default

    def _remember(line_name: str = line.name, key: str = ack_key) -> None:
        st.session_state[SELECTION_KEY][line_name] = list(st.session_state[key])

    chosen = st.multiselect(
        "Alarms to acknowledge (all of an incident's: the incident is acknowledged once)", waiting_ids, format_func=labels.get, key=ack_key, on_change=_remember
    )
    st.text_input("What did you see, what is being done?", key="drift.ack_note")

    def _acknowledge(line_name: str = line.name, key: str = ack_key, shown: tuple[drift_db.IncidentView, ...] = tuple(incidents)) -> None:
        """In the button's callback (once per click), for the incidents on screen when it was drawn."""
        chosen = list(st.session_state.get(key) or [])
        note = str(st.session_state.get("drift.ack_note") or "")
        st.session_state[SELECTION_KEY][line_name] = chosen
        try:
            if not chosen:
                raise drift_db.DriftError("choose at least one alarm")
            if not note.strip():
                raise drift_db.DriftError("acknowledging needs a note: what was seen and what is being done")
            for incident in shown:
                mine = [a.id for a in incident.alarms if not a.acknowledged]
                if mine and all(i in chosen for i in mine):
                    actions.acknowledge_incident(database, user, incident_id=incident.id, note=note)
                else:
                    for alarm_id in (i for i in mine if i in chosen):
                        actions.acknowledge(database, user, alarm_id=alarm_id, note=note)
        except (drift_db.DriftError, PermissionDeniedError) as error:
            st.session_state["drift.ack_error"] = str(error)
        else:
            st.session_state[SELECTION_KEY].pop(line_name, None)
            st.session_state.pop(key, None)
            st.session_state["drift.ack_note"] = ""

    st.button("Acknowledge", key="drift.ack", type="primary", on_click=_acknowledge)
    if problem := st.session_state.pop("drift.ack_error", None):
        st.error(problem)

# -- every metric now ---------------------------------------------------------------------------
st.subheader("Now")
window = report.window
window_text = f"{window.phones} phones"
if window.start and window.end:
    window_text += f", {local_time(window.start, settings.plant_timezone)}–{local_time(window.end, settings.plant_timezone)}"
st.caption(
    f"Window: the last {config.window_phones} inspected phones"
    + (f" of the last {config.window_minutes:g} minutes" if config.window_minutes else "")
    + f" ({window_text}). Reference: {report.reference or 'none'}."
    + (f" {report.reference_error}" if report.reference_error else "")
)
table = pd.DataFrame(
    [
        {
            "metric": METRIC_BY_NAME[v.metric].label,
            "watches": KIND_LABEL[MetricKind(v.kind)],
            "verdict": VERDICT_ICON[v.verdict] + (f" ({v.severity})" if v.severity else ""),
            # Beside the verdict: at 1440 px the numbers scroll, the reason for the verdict does not.
            "why": v.reason,
            "statistic": v.statistic,
            "score": v.score,
            "threshold": v.threshold,
            "PSI": v.psi,
            "reference": v.reference_value,
            "current": v.current_value,
            "n ref": v.n_reference,
            "n now": v.n_current,
        }
        for v in report.verdicts
    ]
)
# A number the check could not give (too few phones, no reference) is an empty cell: st.dataframe
# shows a missing number as "None". The numbers are shown as text, formatted here.
formats = {"score": "{:.3g}", "threshold": "{:.3g}", "PSI": "{:.3f}", "reference": "{:.3g}", "current": "{:.3g}", "n ref": "{:,.0f}", "n now": "{:,.0f}"}
for column, number_format in formats.items():
    table[column] = [number_format.format(value) if value is not None and not pd.isna(value) else "" for value in table[column]]
table["statistic"] = table["statistic"].fillna("")
st.dataframe(
    table,
    hide_index=True,
    key="drift.table",
    column_config={
        "why": st.column_config.TextColumn("why", width="large", help="Why the check gave this verdict (in full under the chart below)."),
        "score": st.column_config.TextColumn("score", width="small"),
        "threshold": st.column_config.TextColumn("threshold", width="small"),
        "PSI": st.column_config.TextColumn("PSI", width="small"),
        "reference": st.column_config.TextColumn("ref", width="small", help="The reference's median (a measurement) or share (a rate)."),
        "current": st.column_config.TextColumn("now", width="small", help="The window's median (a measurement) or share (a rate)."),
        "n ref": st.column_config.TextColumn("n ref", width="small", help="Phones in the reference."),
        "n now": st.column_config.TextColumn("n now", width="small", help="Phones in the window."),
    },
)

# -- the chosen metric over time ----------------------------------------------------------------
st.subheader(spec.label)
verdict = report.verdict(metric)
st.caption(f"{VERDICT_ICON[verdict.verdict]}: {verdict.reason}")
with database.read() as session:
    reference, _ = monitor().reference(session, line, config)
    series = drift_db.metric_series(session=session, line_id=line.id, metric=metric, since=since) if spec.family is Family.NUMERIC else []
reference_values = reference.sample.values.get(metric) if reference else None
alarm_times = [a.raised_at for a in past_alarms if a.metric == metric]


def _mark_alarms(figure: go.Figure) -> None:
    for moment in alarm_times:
        figure.add_vline(x=moment, line_color="red", line_dash="dot", annotation_text="alarm", annotation_position="top left")


left, right = st.columns(2)
with left:
    figure = go.Figure()
    if spec.family is Family.NUMERIC and series:
        frame = pd.DataFrame(series, columns=["at", "value"])
        figure.add_trace(go.Scattergl(x=frame["at"], y=frame["value"], mode="markers", marker={"size": 3, "opacity": 0.35}, name="each phone"))
        rolling = frame["value"].rolling(max(5, min(config.window_phones, len(frame)) // 5), min_periods=1).median()
        figure.add_trace(go.Scatter(x=frame["at"], y=rolling, mode="lines", name="rolling median", line={"width": 2}))
        if reference_values is not None and reference_values.size:
            low, mid, high = np.percentile(reference_values.astype(float), [5, 50, 95])
            band = {"annotation_text": "reference 5–95 %", "annotation_position": "top right"}
            figure.add_hrect(y0=low, y1=high, fillcolor="green", opacity=0.12, line_width=0, **band)
            figure.add_hline(y=mid, line_dash="dash", line_color="green", annotation_text="reference median")
    elif history:
        points = [(check.checked_at, r.get("current_value"), r.get("reference_value")) for check in history for r in check.results if r["metric"] == metric]
        frame = pd.DataFrame(points, columns=["at", "current", "reference"])
        figure.add_trace(go.Scatter(x=frame["at"], y=frame["current"], mode="lines+markers", name="window"))
        figure.add_trace(go.Scatter(x=frame["at"], y=frame["reference"], mode="lines", name="reference", line={"dash": "dash", "color": "green"}))
    _mark_alarms(figure)
    figure.update_layout(title="Production against the reference", height=360, margin={"t": 50, "b": 10}, yaxis_title=spec.unit)
    st.plotly_chart(figure, key="drift.series")
with right:
    points = [(check.checked_at, r) for check in history for r in check.results if r["metric"] == metric]
    figure = go.Figure()
    if points:
        frame = pd.DataFrame([{"at": at, **r} for at, r in points])
        scored = frame[frame["score"].notna()]
        drifted = scored[scored["verdict"] == "drift"]
        p_value = verdict.statistic in ("ks", "chi2")
        score_name = f"{verdict.statistic} p-value" if p_value else f"{verdict.statistic} score"
        figure.add_trace(go.Scatter(x=scored["at"], y=scored["score"], mode="lines+markers", name=score_name))
        figure.add_trace(go.Scatter(x=drifted["at"], y=drifted["score"], mode="markers", name="drift", marker={"color": "red", "size": 10, "symbol": "x"}))
        if scored["threshold"].notna().any():
            threshold = float(scored["threshold"].dropna().iloc[-1])
            figure.add_hline(y=threshold, line_dash="dash", line_color="red")
            # Labelled by hand: on a log axis plotly puts an hline's own label at the value itself rather than
            # at its logarithm, far from the line (the p-value thresholds are 0.01 and below).
            label_y = math.log10(threshold) if p_value and threshold > 0 else threshold
            figure.add_annotation(
                x=1, xref="paper", y=label_y, yref="y", text="threshold", showarrow=False, xanchor="right", yanchor="bottom", font={"color": "red"}
            )
        if "psi" in frame and frame["psi"].notna().any():
            figure.add_trace(go.Scatter(x=frame["at"], y=frame["psi"], mode="lines", name="PSI", yaxis="y2", line={"color": "orange"}))
            figure.update_layout(yaxis2={"overlaying": "y", "side": "right", "title": "PSI", "rangemode": "tozero", "tickformat": ".2f", "nticks": 5})
        if p_value and not scored.empty:
            # Labels at the decades only (1, 0.1, 0.01...), not at every minor tick of the log axis.
            figure.update_layout(yaxis={"type": "log", "title": "p-value (drift below the threshold)", "dtick": 1, "exponentformat": "power"})
    if points and not scored.empty:
        _mark_alarms(figure)
        figure.update_layout(title="The statistic at each check", height=360, margin={"t": 50, "b": 10}, legend={"orientation": "h"})
        st.plotly_chart(figure, key="drift.statistic")
    else:  # words rather than an empty pair of axes
        st.markdown("**The statistic at each check**")
        if not points:
            st.info(f"No checks yet in this range: the line is checked every {config.check_every} phones.")
        else:
            count = f"{len(points)} check{'' if len(points) == 1 else 's'}"
            st.info(f"{count} in this range, all inconclusive (too few phones in the window): nothing to plot yet.")

current_values = window_sample.values.get(metric)
if reference_values is not None and current_values is not None and reference_values.size and current_values.size:
    figure = go.Figure()
    if spec.family is Family.NUMERIC:
        # One set of bins for both: each trace binned on its own made the narrower one's bars look taller.
        both = np.concatenate([reference_values.astype(float), current_values.astype(float)])
        low, high = float(np.min(both)), float(np.max(both))
        bins = {"start": low, "end": high, "size": (high - low) / 40 if high > low else 1.0}
        figure.add_trace(go.Histogram(x=reference_values, histnorm="probability", name="reference", opacity=0.6, xbins=bins))
        figure.add_trace(go.Histogram(x=current_values, histnorm="probability", name="now", opacity=0.6, xbins=bins))
        figure.update_layout(barmode="overlay")
    else:
        for name, values in (("reference", reference_values), ("now", current_values)):
            shares = [float(np.mean(values == category)) for category in spec.categories]
            figure.add_trace(go.Bar(x=list(spec.categories), y=shares, name=name))
        figure.update_layout(yaxis_tickformat=".0%")
    figure.update_layout(title="Reference against the current window", height=320, margin={"t": 50, "b": 10}, xaxis_title=spec.unit)
    st.plotly_chart(figure, key="drift.histogram")

# -- see it with your own eyes ------------------------------------------------------------------
st.subheader("Reference and current images")
if reference is not None and reference.source == "production":
    choice_images = []
    with database.read() as session:
        choice = drift_db.reference_choice(session=session, line_id=line.id, model_version_id=line.active_model_id)
        if choice:
            choice_images = drift_db.recent_images(session=session, line_id=line.id, limit=3, start=choice.period_start, end=choice.period_end)
    reference_images = [(serial, settings.image_file(path)) for serial, path in choice_images]
else:
    reference_images = [(path.stem, path) for path in (reference.sample_images if reference else [])][:3]
with database.read() as session:
    current_images = [(serial, settings.image_file(path)) for serial, path in drift_db.recent_images(session=session, line_id=line.id, limit=3)]


def _show(images: list, caption: str) -> None:
    if not images:
        st.caption(f"No {caption} images.")
        return
    for column, (name, path) in zip(st.columns(len(images)), images, strict=False):
        try:
            column.image(read_image(path)[..., ::-1], caption=str(name))
        except InvalidImageError as error:
            column.caption(f"{name}: {error}")


image_left, image_right = st.columns(2)
with image_left:
    st.markdown("**Reference**")
    _show(reference_images, "reference")
with image_right:
    st.markdown("**Now** (latest phones)")
    _show(current_images, "current")

# -- reference and settings ---------------------------------------------------------------------
with st.expander("Reference: what counts as normal"):
    st.write(report.reference or report.reference_error or "none")
    if may(user.role, Action.SET_DRIFT_REFERENCE):
        with st.form("drift.reference"):
            st.caption("Accept a period of this line's own production as normal, e.g. after new lamps were installed and checked.")
            today = datetime.now(UTC).date()
            cols = st.columns(4)
            start_date = cols[0].date_input("From (UTC)", value=today - timedelta(days=7), key="drift.ref_start_date")
            start_time = cols[1].time_input("at", value=datetime.min.time(), key="drift.ref_start_time")
            end_date = cols[2].date_input("Until (UTC)", value=today, key="drift.ref_end_date")
            end_time = cols[3].time_input("at ", value=datetime.now(UTC).time().replace(microsecond=0), key="drift.ref_end_time")
            note = st.text_input("Why this period is normal", key="drift.ref_note")
            if st.form_submit_button("Use this period as the reference"):
                start = datetime.combine(start_date, start_time, tzinfo=UTC)
                end = datetime.combine(end_date, end_time, tzinfo=UTC)
                try:
                    actions.accept_production_reference(database, user, line_name=line.name, start=start, end=end, note=note or None)
                except (drift_db.DriftError, PermissionDeniedError) as error:
                    st.error(str(error))
                else:
                    st.rerun()
        if report.reference_source == "production" and st.button("Back to the model's training reference", key="drift.ref_reset"):
            actions.use_model_reference(database, user, line_name=line.name)
            st.rerun()

with st.expander("Settings and thresholds"):
    editable = may(user.role, Action.EDIT_DRIFT_SETTINGS)
    with st.form("drift.settings"):
        cols = st.columns(4)
        window_phones = cols[0].number_input("Window (phones)", min_value=1, value=config.window_phones, disabled=not editable, key="drift.s_window")
        min_phones = cols[1].number_input("Minimum phones", min_value=1, value=config.min_phones, disabled=not editable, key="drift.s_min")
        check_every = cols[2].number_input("Check every (phones)", min_value=1, value=config.check_every, disabled=not editable, key="drift.s_every")
        consecutive = cols[3].number_input("Checks in a row to alarm", min_value=1, value=config.consecutive, disabled=not editable, key="drift.s_consec")
        cols = st.columns(3)
        levels = [level.value for level in AutomationLevel]
        step_down_to = cols[0].selectbox(
            "A severe alarm steps down to", levels, index=levels.index(config.step_down_to.value), disabled=not editable, key="drift.s_step"
        )
        defect_rate = cols[1].number_input(
            "Usual defect rate", min_value=0.0, max_value=0.99, value=config.reference_defect_rate, step=0.01, disabled=not editable, key="drift.s_rate"
        )
        window_minutes = cols[2].number_input(
            "Window (minutes, 0 = none)", min_value=0.0, value=float(config.window_minutes or 0), disabled=not editable, key="drift.s_minutes"
        )
        rows = [{"metric": s.name, **{k: config.threshold(s.name, k) for k in s.thresholds}} for s in METRICS]
        thresholds = st.data_editor(pd.DataFrame(rows).set_index("metric"), disabled=not editable, key="drift.s_thresholds")
        note = st.text_input("Why the change", disabled=not editable, key="drift.s_note")
        if st.form_submit_button("Save settings", disabled=not editable):
            overrides: dict[str, dict[str, float]] = {}
            for name, row in thresholds.iterrows():
                for key, value in row.items():
                    if pd.notna(value) and key in METRIC_BY_NAME[str(name)].thresholds and float(value) != METRIC_BY_NAME[str(name)].thresholds[str(key)]:
                        overrides.setdefault(str(name), {})[str(key)] = float(value)
            try:
                new_config = DriftConfig(
                    window_phones=int(window_phones),
                    window_minutes=float(window_minutes) or None,
                    min_phones=int(min_phones),
                    min_pairs=config.min_pairs,
                    check_every=int(check_every),
                    consecutive=int(consecutive),
                    step_down_to=AutomationLevel(step_down_to),
                    reference_defect_rate=float(defect_rate),
                    large_sample=config.large_sample,
                    thresholds=overrides,
                )
                actions.update_settings(database, user, line_name=line.name, config=new_config, note=note or None)
            except (ValueError, PermissionDeniedError) as error:
                st.error(str(error))
            else:
                st.rerun()
    if not editable:
        st.caption("Engineers and admins change these; every change is in the audit log.")

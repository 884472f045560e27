"""Shadow comparison: people against the model on the same phones."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from app import state
from app.widgets import annotated_image, box_tuples, line_picker, local_time
from core.comparison import MIN_PAIRS, compare, daily_trend
from db.comparison import model_versions, paired_decisions
from db.lines import list_lines

#: The trend's series in the floor's words.
TREND_WORDS = {
    "agreement": "agreement",
    "escape_rate": "escape rate (defective phones the model would pass)",
    "over_reject_rate": "over-reject rate (good phones the model would reject)",
    "pairs": "phones judged by both",
}
WINDOWS = {"last hour": timedelta(hours=1), "last 24 hours": timedelta(days=1), "last 7 days": timedelta(days=7), "all time": None}

database = state.database()
settings = state.settings()
st.title("Shadow comparison")

with database.read() as session:
    lines = list_lines(session=session)
    versions = model_versions(session=session)

filters = st.columns(4)
line_name = line_picker(filters[0], ["all lines", *(line.name for line in lines)], key="comparison.line")
window = filters[1].selectbox("Time range", list(WINDOWS), index=1, key="comparison.window")
version = filters[2].selectbox("Model version", ["all versions", *versions], key="comparison.model")
include_simulated = filters[3].toggle("Include the simulated inspector", value=True, key="comparison.simulated")

line_id = next((line.id for line in lines if line.name == line_name), None)
since = datetime.now(UTC) - WINDOWS[window] if WINDOWS[window] else None
with database.read() as session:
    pairs = paired_decisions(
        session=session, line_id=line_id, since=since, model_version=None if version == "all versions" else version, include_simulated=include_simulated
    )
result = compare(pairs)

if result.pairs == 0:
    st.info("No phone has been judged by both a person and the model in this window. Run the line in shadow mode and review phones, or widen the time range.")
    st.stop()
if not result.enough_evidence:
    st.warning(f"Only {result.pairs} phones judged by both: fewer than {MIN_PAIRS}, too little evidence to conclude anything yet.")

cols = st.columns(4)
cols[0].metric("Phones judged by both", f"{result.pairs:,}")
cols[1].metric("Agreement", f"{result.agreement.value:.1%}", help=result.agreement.describe())
cols[2].metric("Cohen's kappa", "—" if result.kappa is None else f"{result.kappa:.2f}", help="Agreement beyond chance: 1 is perfect, 0 is chance.")
cols[3].metric(
    "Escape rate",
    "—" if result.escape.value is None else f"{result.escape.value:.1%}",
    help="Phones people rejected that the model would pass. " + result.escape.describe(),
)
st.caption(f"Escape rate {result.escape.describe()} · over-reject rate {result.over_reject.describe()} · agreement {result.agreement.describe()}")

left, right = st.columns(2)
with left:
    labels = ["pass", "reject"]
    z = [[result.confusion[(h, m)] for m in labels] for h in labels]
    heatmap = go.Figure(
        go.Heatmap(z=z, x=[f"model {m}" for m in labels], y=[f"person {h}" for h in labels], text=z, texttemplate="%{text}", colorscale="Blues")
    )
    heatmap.update_layout(title="Confusion (person is the reference)", height=340, margin={"t": 50, "b": 10})
    st.plotly_chart(heatmap, key="comparison.confusion")
with right:
    hourly = window in ("last hour", "last 24 hours")
    trend = daily_trend(pairs, "h" if hourly else "D").rename(columns=TREND_WORDS)
    figure = px.line(trend, x="bucket", y=list(TREND_WORDS.values())[:3], markers=True, title="Over time", hover_data={"phones judged by both": True})
    # Hourly or daily buckets: ticks on whole hours or days, never milliseconds (one bucket alone would get them).
    figure.update_xaxes(title_text="", tickformat="%H:%M" if hourly else "%d %b", dtick=3_600_000 if hourly else 86_400_000)
    figure.update_layout(
        height=340,
        margin={"t": 50, "b": 10},
        yaxis_tickformat=".0%",
        yaxis_title_text="share of phones",
        legend_title_text="",
        legend={"orientation": "h", "yanchor": "top", "y": -0.12, "x": 0},  # under the plot (the ticks say hour or day): at its side it took half the width
    )
    st.plotly_chart(figure, key="comparison.trend")

st.subheader("Disagreements")
disagreements = pairs[pairs["human_verdict"] != pairs["model_verdict"]].copy()
if disagreements.empty:
    st.success("People and the model agree on every phone in this window.")
    st.stop()
disagreements["time"] = [local_time(t.to_pydatetime(), settings.plant_timezone) for t in disagreements["decided_at"]]
disagreements["kind"] = disagreements["human_verdict"].map({"reject": "escape", "pass": "over-reject"})
table = disagreements[["time", "serial", "line", "kind", "human_verdict", "model_verdict", "max_confidence", "user_name", "model_version"]].rename(
    columns={
        "human_verdict": "person said",
        "model_verdict": "model said",
        "max_confidence": "model's confidence",
        "user_name": "who judged",
        "model_version": "model version",
    }
)
# As tall as its rows, up to 300 px (a fixed 300 px showed empty rows under a few disagreements).
st.dataframe(table, hide_index=True, key="comparison.disagreements", height=min(300, 35 * (len(table) + 1) + 3))
choices = {f"{row.serial} · {row.kind} · {row.time}": i for i, row in enumerate(disagreements.itertuples())}
opened = st.selectbox("Open a phone", list(choices), index=None, placeholder="choose a disagreement to see it", key="comparison.open")
if opened is not None:
    phone = disagreements.iloc[choices[opened]]
    image = annotated_image(str(settings.image_file(phone["image_path"])), box_tuples(list(phone["boxes"])))
    said = f"the person said **{phone['human_verdict']}**, the model **{phone['model_verdict']}**"
    st.markdown(f"**{phone['serial']}**: {said} (max confidence {phone['max_confidence']:.2f})")
    if image is not None:
        st.image(image, width="stretch")

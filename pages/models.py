"""Models: registered versions, each line's active (blue) and candidate (green), compared on the same phones; switch and roll back."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import state
from app.session import current_user
from core import deployment
from core.auth import Action, PermissionDeniedError, may
from core.comparison import compare
from core.extras import training_available, training_hint
from core.ladder.actions import LadderError, may_switch_directly
from db.comparison import champion_challenger
from db.lines import list_lines
from db.registry import list_models

REGISTRY_COLUMNS = ["version", "status", "map50", "phone_recall", "false_reject_rate", "decision_threshold", "init_from", "onnx_sha256", "registered_at"]

database = state.database()
user = current_user()
assert user is not None
st.title("Models")

with database.read() as session:
    models = list_models(session=session)
    lines = list_lines(session=session)
st.subheader("Registered versions")
st.dataframe(
    pd.DataFrame(models)[
        ["version", "status", "map50", "phone_recall", "false_reject_rate", "decision_threshold", "init_from", "onnx_sha256", "registered_at"]
    ],
    hide_index=True,
    key="models.registry",
    column_config={"onnx_sha256": st.column_config.TextColumn("ONNX sha256"), "map50": st.column_config.NumberColumn("mAP50 (normal)", format="%.3f")},
)
if not lines:
    st.stop()

line_name = st.selectbox("Line", [line.name for line in lines], key="models.line")
line = next(line for line in lines if line.name == line_name)
cols = st.columns(3)
cols[0].metric("Active (blue)", line.active_model_version or "none")
cols[1].metric("Candidate (green, in shadow)", line.candidate_model_version or "none")
cols[2].metric("Previous (rollback target)", line.previous_model_version or "none")

flash = st.session_state.pop("models.flash", None)
if flash:
    st.success(flash)

# -- champion against challenger ----------------------------------------------------------------
if line.active_model_id and line.candidate_model_id:
    with database.read() as session:
        pairs = champion_challenger(session=session, line_id=line.id, active_id=line.active_model_id, candidate_id=line.candidate_model_id)
    st.subheader(f"{line.active_model_version} against {line.candidate_model_version} on the same phones")
    if pairs.empty:
        st.info("No phone has been judged by both versions yet: the worker runs the candidate on every phone from now on.")
    else:
        judged = pairs.dropna(subset=["human_verdict"])
        both = st.columns(3)
        both[0].metric("Phones judged by both versions", f"{len(pairs):,}")
        both[1].metric("Versions agree", f"{(pairs['active_verdict'] == pairs['candidate_verdict']).mean():.1%}")
        both[2].metric("Of them judged by a person", f"{len(judged):,}")
        rows = []
        for role, column, version in (
            ("active", "active_verdict", line.active_model_version),
            ("candidate", "candidate_verdict", line.candidate_model_version),
        ):
            result = compare(judged.rename(columns={column: "model_verdict"})[["human_verdict", "model_verdict"]])
            rows.append(
                {
                    "version": f"{version} ({role})",
                    "agreement with people": result.agreement.describe(),
                    "escape rate": result.escape.describe(),
                    "over-reject rate": result.over_reject.describe(),
                }
            )
        st.dataframe(pd.DataFrame(rows), hide_index=True, key="models.compare")
        figure = px.scatter(
            pairs,
            x="active_confidence",
            y="candidate_confidence",
            color=pairs["human_verdict"].fillna("not judged"),
            labels={"active_confidence": f"{line.active_model_version} confidence", "candidate_confidence": f"{line.candidate_model_version} confidence"},
            title="Highest confidence per phone",
        )
        figure.update_layout(height=380, margin={"t": 50, "b": 10}, legend_title_text="person said")
        st.plotly_chart(figure, key="models.scatter")

# -- actions ------------------------------------------------------------------------------------
st.subheader("Deploy")
note = st.text_input("Note", key="models.note")
versions = [m["version"] for m in models if m["version"] != line.active_model_version]


def _act(action) -> None:
    try:
        message = action()
    except (deployment.DeploymentError, LadderError, PermissionDeniedError, ValueError) as error:
        st.error(f"Refused: {error}")
    else:
        st.session_state["models.flash"] = message
        st.rerun()


if may(user.role, Action.SWITCH_MODEL):
    chosen = st.selectbox("Candidate to run in shadow", ["none", *versions], key="models.candidate_choice")
    if st.button("Set candidate", key="models.set_candidate"):
        _act(lambda: deployment.set_candidate(database, user, line_name=line.name, version=None if chosen == "none" else chosen, note=note or None))
    if line.candidate_model_id:
        label = "Switch" if may_switch_directly(user, line) else "Request a switch (a manager approves in canary and full)"
        if st.button(f"{label}: make {line.candidate_model_version} active", type="primary", key="models.switch"):
            _act(lambda: deployment.switch(database, user, line_name=line.name, note=note or None).message)
can_roll_back = line.previous_model_id is not None and may(user.role, Action.ROLLBACK)
if can_roll_back and st.button(f"Roll back to {line.previous_model_version}", key="models.rollback"):
    _act(lambda: deployment.rollback(database, user, line_name=line.name, note=note or None))
st.caption("Rollback takes effect on the worker's next phones; the version rolled back from stays loaded as the candidate.")

# -- data sets and training in the background ---------------------------------------------------
st.subheader("Retrain")
datasets_dir = state.settings().data_dir / "datasets"
datasets = (
    sorted((p for p in datasets_dir.glob("*") if (p / "manifest.json").is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    if datasets_dir.is_dir()
    else []
)
if may(user.role, Action.SWITCH_MODEL):
    with st.form("models.export"):
        st.caption("Export every agreed or adjudicated label (with generated phones mixed in) as a versioned YOLO data set.")
        export_name = st.text_input("Data set name", value=f"labels-{pd.Timestamp.now(tz='UTC'):%Y%m%d-%H%M}", key="models.export_name")
        recipe_cols = st.columns(3)
        only_line = recipe_cols[0].checkbox(f"Only {line.name}'s labels", value=False, key="models.export_only_line")
        generated_train = recipe_cols[1].number_input("Generated phones to train on", min_value=0, max_value=5000, value=200, step=50, key="models.export_gen")
        generated_val = recipe_cols[2].number_input("Generated phones held out", min_value=0, max_value=1000, value=40, step=10, key="models.export_gen_val")
        if st.form_submit_button("Export labelled phones"):
            from core.dataset import DatasetError, ExportRecipe, export_dataset
            from core.training import DataRecipe

            recipe = ExportRecipe(
                name=export_name,
                line=line.name if only_line else None,
                generated=DataRecipe(train_count=int(generated_train), val_count=int(generated_val), train_seed=5000, val_seed=6000, defect_rate=0.6),
            )
            try:
                root = export_dataset(database, state.settings(), recipe, progress=lambda _: None)
            except DatasetError as error:
                st.error(str(error))
            else:
                st.session_state["models.flash"] = f"data set written to {root}"
                st.rerun()
    if not training_available():
        st.info(training_hint("Training a new version"), icon=":material/info:")
    elif datasets:
        with st.form("models.train"):
            dataset = st.selectbox("Data set", datasets, format_func=lambda p: p.name, key="models.train_dataset")
            cols = st.columns(3)
            version = cols[0].text_input("New version name", value=f"{line.active_model_version}-r{len(models) + 1}", key="models.train_version")
            epochs = cols[1].number_input("Epochs", min_value=1, max_value=300, value=30, key="models.train_epochs")
            as_candidate = cols[2].checkbox(f"Run it in shadow on {line.name} when done", value=True, key="models.train_candidate")
            if st.form_submit_button("Start training"):
                from core.training_jobs import start_job

                active = next((m for m in models if m["version"] == line.active_model_version), None)
                try:
                    job_id = start_job(
                        database,
                        state.settings(),
                        user,
                        dataset=dataset,
                        version=version,
                        epochs=int(epochs),
                        init_from=Path(str(active["path"])) if active else None,
                        candidate_for=line.name if as_candidate else None,
                    )
                except (ValueError, PermissionDeniedError) as error:
                    st.error(str(error))
                else:
                    st.session_state["models.flash"] = f"training job {job_id} started in the background"
                    st.rerun()


@st.fragment(run_every=2)
def training_jobs() -> None:
    from core.training_jobs import cancel_job, list_jobs

    jobs = list_jobs(database)
    if not jobs:
        st.caption("No training job yet.")
        return
    for job in jobs[:5]:
        metrics = job.progress.get("metrics") or {}
        detail = f"epoch {job.progress.get('epoch', 0)}/{job.epochs}" + (f", mAP50 {metrics['mAP50']:.3f}" if "mAP50" in metrics else "")
        st.progress(job.fraction, text=f"job {job.id}: {job.version} · {job.status} · {detail}" + (f" · {job.message}" if job.message else ""))
        losses = job.progress.get("losses") or {}
        if losses:
            st.caption("latest epoch: " + ", ".join(f"{name} {value:.3f}" for name, value in {**losses, **metrics}.items() if not name.startswith("fitness")))
        history = pd.DataFrame(job.progress.get("history") or [])
        if job is jobs[0] and len(history) > 1:
            curves = history.melt(id_vars="epoch", var_name="measure", value_name="value")
            curves["panel"] = curves["measure"].map(lambda m: "loss" if m.endswith("loss") else "validation")
            figure = px.line(curves, x="epoch", y="value", color="measure", facet_col="panel", markers=True, height=260)
            figure.update_yaxes(matches=None, showticklabels=True)
            st.plotly_chart(figure, key=f"models.curves.{job.id}")
        cancellable = job.status in ("queued", "running") and not job.cancel_requested and may(user.role, Action.SWITCH_MODEL)
        if cancellable and st.button(f"Cancel job {job.id}", key=f"models.cancel.{job.id}"):
            cancel_job(database, user, job.id)
            st.rerun(scope="fragment")


training_jobs()

"""Models: registered versions, each line's active (blue) and candidate (green), compared on the same phones; switch and roll back."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.express as px
import streamlit as st

from app import state
from app.outage import guarded
from app.session import current_user
from app.widgets import LEVEL_WORDS, line_picker
from core import deployment
from core.auth import Action, PermissionDeniedError, may
from core.comparison import compare
from core.extras import training_available, training_hint
from core.ladder.actions import LadderError, may_switch_directly
from core.vocabulary import AutomationLevel
from db.comparison import champion_challenger
from db.lines import list_lines
from db.registry import list_models, model_folder

REGISTRY_COLUMNS = [
    "version",
    "status",
    "classes",
    "map50",
    "phone_recall",
    "false_reject_rate",
    "decision_threshold",
    "init_from",
    "onnx_sha256",
    "registered_at",
]

database = state.database()
user = current_user()
assert user is not None
#: Levels at which a person decides every phone (the model decides some from partial automation on).
PEOPLE_DECIDE = {AutomationLevel.HUMAN_ONLY, AutomationLevel.SHADOW, AutomationLevel.ASSIST}

st.title("Models")

with database.read() as session:
    models = list_models(session=session)
    lines = list_lines(session=session)
st.subheader("Registered versions")
if not models:
    st.info("No model version registered yet: `shadowline model import` brings in a plant's own model, `shadowline init` the shipped one.")
registry = pd.DataFrame(models, columns=REGISTRY_COLUMNS)
# The first 12 hex digits tell versions apart at a glance; 64 were cut off at 1440 px anyway.
registry["onnx_sha256"] = registry["onnx_sha256"].map(lambda digest: digest[:12] + "…" if isinstance(digest, str) and len(digest) > 12 else digest)
st.dataframe(
    registry,
    hide_index=True,
    key="models.registry",
    width="stretch",
    # Widths that fit the page at 1440 px (980 px of table): the 64-digit hash and the registration time were cut off.
    column_config={
        "version": st.column_config.TextColumn("version", width=110),
        "status": st.column_config.TextColumn("status", width=165),
        "classes": st.column_config.TextColumn("classes", width=120),
        "map50": st.column_config.NumberColumn(
            "mAP50", format="%.3f", width=70, help="Box mAP50 on its own evaluation: generated normal phones, or the held-out split."
        ),
        "phone_recall": st.column_config.NumberColumn("recall", format="%.3f", width=70, help="Phone recall: the share of defective phones the model rejects."),
        "false_reject_rate": st.column_config.NumberColumn("false rej.", format="%.3f", width=70, help="The share of good phones the model rejects."),
        "decision_threshold": st.column_config.NumberColumn("reject at", format="%.2f", width=70, help="Rejected when a box reaches this confidence."),
        "init_from": st.column_config.TextColumn("made from", width=100, help="The version it was trained (fine-tuned) from, or quantized from."),
        "onnx_sha256": st.column_config.TextColumn(
            "ONNX sha256", width=110, help="Its first 12 hex digits; `sha256sum models/VERSION/model.onnx` on the box gives the whole."
        ),
        "registered_at": st.column_config.DatetimeColumn("registered", format="YYYY-MM-DD", width=100, help="The day it was registered (UTC)."),
    },
)
if not lines:
    st.stop()

line_name = line_picker(st, [line.name for line in lines], key="models.line")
line = next(line for line in lines if line.name == line_name)
cols = st.columns(3)
cols[0].metric("Active (blue)", line.active_model_version or "none")
cols[1].metric("Candidate (green, in shadow)", line.candidate_model_version or "none")
cols[2].metric("Previous (rollback target)", line.previous_model_version or "none")

flash = st.session_state.pop("models.flash", None)
if flash:
    (st.error if flash.startswith("Refused") else st.success)(flash)

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
can_deploy = may(user.role, Action.SWITCH_MODEL) or (line.previous_model_id is not None and may(user.role, Action.ROLLBACK))
if not can_deploy:
    st.caption(
        f"Nothing to deploy for you here: engineers and managers choose the candidate and switch versions; "
        f"anyone may roll {line.name} back once it has an earlier version."
    )
if st.session_state.pop("models.note_used", False):
    # The note went with the change just made: emptied before it is drawn, or the next change (a
    # rollback, say) would carry it into the audit log too. Dropping its state is not enough: the
    # browser sends the typed text back with the rerun.
    st.session_state["models.note"] = ""
note = st.text_input("Note", key="models.note", help="Goes into the audit log with the next change made here, then empties.") if can_deploy else ""
versions = [m["version"] for m in models if m["version"] != line.active_model_version]


#: What a deployment action raises when it refuses (shown as "Refused: ...").
REFUSALS = (deployment.DeploymentError, LadderError, PermissionDeniedError, ValueError)


def _act(action) -> None:
    try:
        message = action()
    except REFUSALS as error:
        st.error(f"Refused: {error}")
    else:
        st.session_state["models.flash"] = message
        st.session_state["models.note_used"] = True
        st.rerun()


def candidate_ui(line, versions: list[str], note: str) -> None:
    """Choose the candidate; the selector starts on the one running now."""
    options = ["none", *versions]
    running = line.candidate_model_version if line.candidate_model_version in options else "none"
    if st.session_state.get("models.candidate_for") != (line.name, running):
        # A new line, or the candidate changed (here or elsewhere): show what runs now.
        st.session_state["models.candidate_choice"] = running
        st.session_state["models.candidate_for"] = (line.name, running)
    chosen = st.selectbox("Candidate to run in shadow", options, key="models.candidate_choice", help=f"running now: {running}")
    if not versions:
        # A fresh-eyes walk found "none" as the only choice and nothing saying where a candidate comes from.
        st.caption(
            f"No other version is registered, so there is no candidate yet: retrain one from {line.active_model_version or 'the active version'} "
            "under *Retrain* below, or bring in the plant's own with `shadowline model import`."
        )
    if st.button("Set candidate", key="models.set_candidate", disabled=chosen == running):
        _act(lambda: deployment.set_candidate(database, user, line_name=line.name, version=None if chosen == "none" else chosen, note=note or None))


def confirm_ui(kind: str, question: str, do) -> None:
    """A second, explicit click for a change that swaps the model deciding phones on a line."""
    if st.session_state.get("models.confirm") != kind:
        return
    with st.container(border=True):
        st.warning(question, icon=":material/help:")
        yes, no = st.columns([1, 4])
        if yes.button("Yes, go ahead", type="primary", key="models.confirm_yes"):
            st.session_state.pop("models.confirm", None)
            do()
        if no.button("Cancel", key="models.confirm_no"):
            st.session_state.pop("models.confirm", None)
            st.rerun()


if st.session_state.get("models.confirm_line") != line.name:
    st.session_state.pop("models.confirm", None)  # a question asked about another line does not carry over
st.session_state["models.confirm_line"] = line.name
if may(user.role, Action.SWITCH_MODEL):
    candidate_ui(line, versions, note)
    if line.candidate_model_id:
        direct = may_switch_directly(user, line)
        label = "Switch" if direct else "Request a switch (a manager approves in canary and full)"
        if st.button(f"{label}: make {line.candidate_model_version} active", type="primary", key="models.switch"):
            st.session_state["models.confirm"] = "switch"
        compared = 0 if not (line.active_model_id and line.candidate_model_id) or pairs.empty else len(pairs)
        by_people = 0 if compared == 0 else int(pairs["human_verdict"].notna().sum())
        evidence = (
            f" The two versions have seen {compared:,} of the same phones, {by_people:,} of them judged by a person (the comparison above)."
            if compared
            else " The two versions have not yet seen a phone in common."
        )
        who_decides = (
            f" At {LEVEL_WORDS[line.level.value]} people decide every phone; the active version's verdicts are logged or shown to them."
            if line.level in PEOPLE_DECIDE
            else ""
        )
        confirm_ui(
            "switch",
            (
                f"Make {line.candidate_model_version} the active version on {line.name} instead of {line.active_model_version}?"
                if direct
                else f"Ask a manager to make {line.candidate_model_version} active on {line.name}?"
            )
            + evidence
            + who_decides,
            lambda: _act(lambda: deployment.switch(database, user, line_name=line.name, to_version=line.candidate_model_version, note=note or None).message),
        )
can_roll_back = line.previous_model_id is not None and may(user.role, Action.ROLLBACK)
if can_roll_back and st.button(f"Roll back to {line.previous_model_version}", key="models.rollback"):
    st.session_state["models.confirm"] = "rollback"
if can_roll_back:
    confirm_ui(
        "rollback",
        f"Roll {line.name} back from {line.active_model_version} to {line.previous_model_version}, from the next phones on?",
        lambda: _act(lambda: deployment.rollback(database, user, line_name=line.name, from_version=line.active_model_version, note=note or None)),
    )
if can_roll_back:
    st.caption("Rollback takes effect on the worker's next phones; the version rolled back from stays loaded as the candidate.")


# -- a plant's own model ------------------------------------------------------------------------
def model_import_ui() -> None:
    """Engineers import the lab's Ultralytics detection .pt (or its ONNX export) as a registered version."""
    with st.expander("Import a plant's own model (.pt or .onnx)"):
        with st.form("models.import"):
            st.file_uploader("Ultralytics detection model", type=["pt", "onnx"], key="models.import_file")
            cols = st.columns(2)
            cols[0].text_input("Version name", key="models.import_version")
            cols[1].text_input("Camera frame (WxH)", value="", placeholder="2448x2048 (default 4:3)", key="models.import_camera")
            # In the button's callback, once per click: an import (an export to ONNX, an evaluation) takes seconds (see _export).
            st.form_submit_button("Import and register", on_click=_import_from_form)
        st.caption(
            "Classes and input size are read from the model. Then `shadowline dataset import` and "
            "`shadowline evaluate --model VERSION --dataset NAME --record` give it a threshold, figures and a drift reference."
        )


def _import_from_form() -> None:
    state_ = st.session_state
    version, camera = state_.get("models.import_version", "").strip(), state_.get("models.import_camera", "").strip()
    state_["models.flash"] = _import_model(state_.get("models.import_file"), version, camera)


def _import_model(upload, version: str, camera: str) -> str:
    import shutil
    import tempfile

    from core.model_import import ModelImportError, import_model
    from db.registry import register_model_version

    if upload is None or not version:
        return "Refused: choose a file and a version name"
    try:
        aspect = None
        if camera:
            width, _, height = camera.lower().replace(":", "x").partition("x")
            aspect = float(width) / float(height)
    except (ValueError, ZeroDivisionError):
        return f"Refused: camera frame {camera!r} is not WIDTHxHEIGHT"
    settings = state.settings()
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=settings.cache_dir) as tmp:
        source = Path(tmp) / Path(upload.name).name
        source.write_bytes(upload.getvalue())
        try:
            deployment.require_register(user)
            folder = import_model(source, version, settings.models_dir, actor=user.name, camera_aspect=aspect, progress=lambda _: None)
        except (ModelImportError, PermissionDeniedError) as error:
            return f"Refused: {error}"
    try:
        with database.write() as session:
            registered = register_model_version(session=session, model_dir=folder, actor=user.name)
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return f"{registered.version} imported and registered: {', '.join(read_classes(folder))}"


def read_classes(folder: Path) -> list[str]:
    from core.detector.card import class_list, read_card

    return class_list(read_card(folder))


if may(user.role, Action.SWITCH_MODEL):
    model_import_ui()


def register_ui() -> None:
    """Register a version folder found under the models folder; a bad card is listed with its problem."""
    models_dir = state.settings().models_dir
    folders = deployment.version_folders(models_dir, registered_paths={str(m["path"]) for m in models}, registered_versions={str(m["version"]) for m in models})
    st.subheader("Register a version")
    if not folders:
        st.caption(f"Every version folder under {models_dir} is registered (a new one needs its card.json and weights there).")
        return
    st.dataframe(
        pd.DataFrame([{"folder": f.path.name, "version": f.version or "", "card": f.problem or "ok"} for f in folders]),
        hide_index=True,
        key="models.folders",
    )
    valid = {f.path.name: f for f in folders if f.problem is None}
    if not valid:
        st.caption("No folder here can be registered until its card is fixed.")
        return
    folder = st.selectbox("Version folder", list(valid), key="models.register_folder")
    # In the button's callback, once per click: hashing the weights takes a while (see _export).
    st.button("Register (checks the card and the weights' hashes)", key="models.register", on_click=_register, args=(valid[folder].path,))


def _register(path: Path) -> None:
    try:
        st.session_state["models.flash"] = deployment.register(database, user, model_dir=path)
    except REFUSALS as error:
        st.session_state["models.flash"] = f"Refused: {error}"


if may(user.role, Action.SWITCH_MODEL):
    register_ui()

# -- data sets and training in the background ---------------------------------------------------
st.subheader("Retrain")
datasets_dir = state.settings().data_dir / "datasets"
datasets = (
    sorted((p for p in datasets_dir.glob("*") if (p / "manifest.json").is_file()), key=lambda p: p.stat().st_mtime, reverse=True)
    if datasets_dir.is_dir()
    else []
)


def _export() -> None:
    """Export the labels (the form's values from its keys): in the button's callback, which runs once per
    click; side effects in the page's body ran twice when a timed rerun (the jobs list) cut the run short."""
    from core.dataset import MANIFEST, DatasetError, ExportRecipe, export_dataset
    from core.training import DataRecipe

    state_ = st.session_state
    recipe = ExportRecipe(
        name=state_["models.export_name"],
        line=line.name if state_["models.export_only_line"] else None,
        generated=DataRecipe(
            train_count=int(state_["models.export_gen"]), val_count=int(state_["models.export_gen_val"]), train_seed=5000, val_seed=6000, defect_rate=0.6
        ),
    )
    try:
        root = export_dataset(database, state.settings(), recipe, progress=lambda _: None)
    except DatasetError as error:
        state_["models.flash"] = f"Refused: {error}"
        return
    try:
        manifest = json.loads((root / MANIFEST).read_text())  # not read_manifest: that hashes every file again
        counts = manifest.get("counts") or {}
    except (OSError, ValueError):
        counts = {}

    def phones(n: int, kind: str) -> str:
        return f"{n} {kind} phone{'' if n == 1 else 's'}"

    described = (
        f": {phones(counts.get('labelled_train', 0), 'labelled')} to train on and {counts.get('labelled_val', 0)} held out, "
        f"{phones(counts.get('generated_train', 0), 'generated')} to train on and {counts.get('generated_val', 0)} held out"
        if counts
        else ""
    )
    state_["models.flash"] = f"Data set {root.name} written to {root}{described}."


def _start_training(active_path: str | None) -> None:
    """Start a training job (the form's values from its keys), once per click: see :func:`_export`."""
    from core.training_jobs import start_job

    state_ = st.session_state
    try:
        job_id = start_job(
            database,
            state.settings(),
            user,
            dataset=state_["models.train_dataset"],
            version=state_["models.train_version"].strip(),
            epochs=int(state_["models.train_epochs"]),
            init_from=model_folder(active_path, state.settings().models_dir) if active_path else None,
            candidate_for=line.name if state_["models.train_candidate"] else None,
        )
    except (ValueError, PermissionDeniedError) as error:
        state_["models.flash"] = f"Refused: {error}"
    else:
        state_["models.flash"] = f"Training job {job_id} started in the background: its progress is below."


if may(user.role, Action.SWITCH_MODEL):
    with st.form("models.export"):
        st.caption("Export every agreed or adjudicated label (with generated phones mixed in) as a versioned YOLO data set.")
        st.text_input("Data set name", value=f"labels-{pd.Timestamp.now(tz='UTC'):%Y%m%d-%H%M}", key="models.export_name")
        recipe_cols = st.columns(3)
        recipe_cols[0].checkbox(f"Only {line.name}'s labels", value=False, key="models.export_only_line")
        recipe_cols[1].number_input("Generated phones to train on", min_value=0, max_value=5000, value=200, step=50, key="models.export_gen")
        recipe_cols[2].number_input("Generated phones held out", min_value=0, max_value=1000, value=40, step=10, key="models.export_gen_val")
        st.form_submit_button("Export labelled phones", on_click=_export)
    if not training_available():
        st.info(training_hint("Training a new version"), icon=":material/info:")
    elif datasets:
        registered = {str(m["version"]) for m in models}
        names = (f"{line.active_model_version}-r{n}" for n in range(len(models) + 1, len(models) + 1000))
        suggested = next(name for name in names if name not in registered)  # never a version that exists
        with st.form("models.train"):
            st.selectbox("Data set", datasets, format_func=lambda p: p.name, key="models.train_dataset")
            cols = st.columns(3)
            cols[0].text_input("New version name", value=suggested, key="models.train_version")
            cols[1].number_input("Epochs", min_value=1, max_value=300, value=30, key="models.train_epochs")
            cols[2].checkbox(f"Run it in shadow on {line.name} when done", value=True, key="models.train_candidate")
            active = next((m for m in models if m["version"] == line.active_model_version), None)
            st.form_submit_button("Start training", on_click=_start_training, args=(str(active["path"]) if active else None,))


@st.fragment(run_every=2)
@guarded
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

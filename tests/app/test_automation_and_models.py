"""The Automation and Models pages: the slider moves lines through the server-side checks; requests and approvals; blue/green."""

from __future__ import annotations

import json
import shutil

import pytest
from sqlalchemy import select

from core.auth import CurrentUser
from core.ladder import actions
from core.vocabulary import AutomationLevel, Role
from core.worker import Worker
from db import ladder as ladder_db
from db.lines import get_line, set_level
from db.models import AuditEntry
from db.registry import register_model_version
from tests.drift_data import add_phones

AUTOMATION, MODELS = "../pages/automation.py", "../pages/models.py"


def _signed_in(app_for, role: Role, page: str):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(f"a-{role.value}", role)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def _level(database) -> AutomationLevel:
    with database.read() as session:
        return get_line(session=session, name="line-1").level


def _put(database, level: AutomationLevel) -> None:
    with database.write() as session:
        set_level(session=session, line_id=get_line(session=session, name="line-1").id, level=level, actor="test")


@pytest.fixture
def small_gates(database):
    actions.set_gates(database, CurrentUser("root", Role.ADMIN), assignments=[f"{k}.min_pairs=60" for k in ("assist", "partial", "canary")])


@pytest.mark.parametrize("role", list(Role))
def test_every_role_sees_the_slider_and_may_move_down(database, app_for, role) -> None:
    _put(database, AutomationLevel.PARTIAL)
    at = _signed_in(app_for, role, AUTOMATION)
    slider = at.select_slider[0]
    assert slider.value == "partial automation"
    assert any("not enough evidence yet" in w.value for w in at.warning)  # no traffic: the gate waits
    slider.set_value("shadow").run()
    at.button(key="automation.move").click().run()
    assert not at.exception
    assert _level(database) is AutomationLevel.SHADOW
    assert any("moved down" in s.value for s in at.success)


def test_a_move_up_needs_a_note_on_the_page(database, app_for) -> None:
    # A fresh-eyes walk moved a line up with the note left empty: the audit log had no why.
    at = _signed_in(app_for, Role.SUPERVISOR, AUTOMATION)
    at.select_slider[0].set_value("AI assistance").run()
    at.button(key="automation.move").click().run()
    assert any("needs a note" in e.value for e in at.error)
    with database.read() as session:
        tried = session.scalars(select(AuditEntry.action).where(AuditEntry.action.like("line.move%"))).all()
    assert tried == [], "nothing tried, nothing audited"
    assert _level(database) is AutomationLevel.SHADOW


def test_a_move_up_without_evidence_is_refused_on_the_page(database, app_for) -> None:
    at = _signed_in(app_for, Role.SUPERVISOR, AUTOMATION)
    at.select_slider[0].set_value("AI assistance").run()
    at.text_input(key="automation.note").input("the first week looked good")
    at.button(key="automation.move").click().run()
    assert any("Refused: not enough evidence yet" in e.value for e in at.error)
    assert _level(database) is AutomationLevel.SHADOW


def test_engineer_requests_canary_and_a_manager_approves_on_the_page(database, app_for, drift_reference, small_gates) -> None:
    _put(database, AutomationLevel.PARTIAL)
    add_phones(database, drift_reference, 400, seed=9)
    at = _signed_in(app_for, Role.ENGINEER, AUTOMATION)
    at.select_slider[0].set_value("canary 5%").run()
    at.text_input(key="automation.note").input("two weeks of partial without an escape")
    at.button(key="automation.move").click().run()
    assert _level(database) is AutomationLevel.PARTIAL
    with database.read() as session:
        (request,) = ladder_db.list_requests(session=session, pending_only=True)
    assert not [b for b in at.button if b.label.startswith("Approve")], "engineers do not approve"

    manager = _signed_in(app_for, Role.MANAGER, AUTOMATION)
    manager.button(key=f"automation.approve.{request.id}").click().run()  # without a note
    assert any("needs a note" in e.value for e in manager.error), [e.value for e in manager.error]
    assert _level(database) is AutomationLevel.PARTIAL
    manager.text_input(key=f"automation.decision_note.{request.id}").input("numbers are good")
    manager.button(key=f"automation.approve.{request.id}").click().run()
    assert not manager.exception
    assert _level(database) is AutomationLevel.CANARY
    assert manager.select_slider[0].value == "canary 5%"


def test_models_page_sets_a_candidate_compares_it_and_switches(database, settings, app_for, shipped_model_dir, tmp_path) -> None:
    folder = tmp_path / "green"
    shutil.copytree(shipped_model_dir, folder)
    card = json.loads((folder / "card.json").read_text())
    card["version"] = "green"
    (folder / "card.json").write_text(json.dumps(card))
    with database.write() as session:
        register_model_version(session=session, model_dir=folder, actor="test")
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert set(at.dataframe[0].value["version"]) == {"scratch-v2", "green"}
    at.selectbox(key="models.candidate_choice").set_value("green").run()
    at.button(key="models.set_candidate").click().run()
    assert not at.exception
    from core.camera import get_scenario
    from core.line_simulator import simulate_line

    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=12, rate=1000, seed=3, inspector=None)
    Worker(database, settings).run(until_empty=True)
    at.run()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Candidate (green, in shadow)"] == "green" and metrics["Phones judged by both versions"] == "12"
    assert at.selectbox(key="models.candidate_choice").value == "green", "the selector shows the running candidate"
    at.text_input(key="models.note").input("green passed the bench")
    at.button(key="models.switch").click().run()
    assert not at.exception
    with database.read() as session:
        assert get_line(session=session, name="line-1").active_model_version == "scratch-v2", "a switch asks first"
    question = " ".join(w.value for w in at.warning)
    assert "12 of the same phones" in question and "people decide every phone" in question, question  # the evidence, and who decides at shadow
    at.button(key="models.confirm_yes").click().run()
    assert not at.exception
    with database.read() as session:
        assert get_line(session=session, name="line-1").active_model_version == "green"
    assert at.text_input(key="models.note").value == "", "the note went with the switch"
    at.button(key="models.rollback").click().run()
    at.button(key="models.confirm_no").click().run()
    with database.read() as session:
        assert get_line(session=session, name="line-1").active_model_version == "green", "cancelled"
    at.button(key="models.rollback").click().run()
    at.button(key="models.confirm_yes").click().run()
    assert not at.exception
    with database.read() as session:
        entries = session.execute(select(AuditEntry.action, AuditEntry.note).order_by(AuditEntry.id)).all()
    assert [note for _, note in entries].count("green passed the bench") == 1, entries
    assert entries[-1].note == "rollback", f"the rollback's own default, not the switch's note: {entries[-1]}"
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    assert (line.active_model_version, line.candidate_model_version, line.previous_model_version) == ("scratch-v2", "green", None)
    assert not [b for b in at.button if b.label.startswith("Roll back")], "no rollback to the version just removed"
    assert at.selectbox(key="models.candidate_choice").value == "green"


def test_models_page_registers_a_folder_and_lists_a_bad_card_without_breaking(database, settings, app_for, shipped_model_dir, tmp_path, monkeypatch) -> None:
    from core import settings as settings_module

    models = tmp_path / "models"
    shutil.copytree(shipped_model_dir, models / "scratch-v2")
    shutil.copytree(shipped_model_dir, models / "blue-2", ignore=shutil.ignore_patterns("*.pt"))
    card = json.loads((models / "blue-2" / "card.json").read_text())
    card["version"] = "blue-2"
    card["weights"].pop("model.pt")
    (models / "blue-2" / "card.json").write_text(json.dumps(card))
    (models / "broken").mkdir()
    (models / "broken" / "card.json").write_text(json.dumps({"version": "broken", "imgsz": "big", "weights": [], "classes": {}}))
    monkeypatch.setenv("SHADOWLINE_MODELS_DIR", str(models))
    settings_module.get_settings.cache_clear()
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    folders = next(d.value for d in at.dataframe if "card" in d.value.columns)
    assert dict(zip(folders["folder"], folders["card"], strict=True))["blue-2"] == "ok"
    assert "invalid imgsz" in dict(zip(folders["folder"], folders["card"], strict=True))["broken"]
    assert at.selectbox(key="models.register_folder").options == ["blue-2"], "a bad card cannot be chosen"
    at.button(key="models.register").click().run()
    assert not at.exception
    assert "registered blue-2" in at.success[0].value
    assert set(at.dataframe[0].value["version"]) == {"scratch-v2", "blue-2"}
    from core.cli import main

    assert main(["model", "list"]) == 0


def test_supervisors_have_no_models_page(database, app_for) -> None:
    at = app_for()
    at.session_state["auth.user"] = CurrentUser("s", Role.SUPERVISOR)
    at.run()
    with pytest.raises(ValueError):
        at.switch_page(MODELS)


def test_an_admin_with_nothing_to_deploy_is_told_so_instead_of_a_lone_note_box(database, app_for) -> None:
    at = _signed_in(app_for, Role.ADMIN, MODELS)
    assert any("Nothing to deploy for you here" in c.value for c in at.caption)
    assert not [t for t in at.text_input if t.key == "models.note"]


def test_an_admin_edits_the_gates_on_the_page(database, app_for) -> None:
    at = _signed_in(app_for, Role.ADMIN, AUTOMATION)
    at.number_input(key="automation.rb_max").set_value(0.07)
    at.text_input(key="automation.gates_note").input("stricter after the audit")
    next(b for b in at.button if b.label == "Save gates").click().run()
    assert not at.exception
    with database.read() as session:
        config = ladder_db.get_gate_config(session=session)
    assert config.rollback.max_disagreement == pytest.approx(0.07) and config.gates["canary"].min_pairs == 500
    engineer = _signed_in(app_for, Role.ENGINEER, AUTOMATION)
    assert next(b for b in engineer.button if b.label == "Save gates").disabled


def test_models_page_refuses_to_export_without_labels_and_shows_no_jobs(database, app_for) -> None:
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert any("No training job yet" in c.value for c in at.caption)
    next(b for b in at.button if b.label == "Export labelled phones").click().run()
    assert any("labelled phones" in e.value and "needs at least 1" in e.value for e in at.error)


def test_models_page_shows_a_jobs_losses_and_curves_by_epoch(database, app_for) -> None:
    from db.models import TrainingJob

    history = [{"epoch": e, "box_loss": 1.8 - 0.1 * e, "cls_loss": 1.1 - 0.05 * e, "mAP50": 0.5 + 0.05 * e} for e in (1, 2, 3)]
    with database.write() as session:
        session.add(
            TrainingJob(
                version="v-curves",
                dataset="/nowhere",
                epochs=10,
                requested_by="erin",
                status="done",
                message="model v-curves trained and registered",
                progress={"epoch": 3, "epochs": 10, "losses": {"box_loss": 1.5, "cls_loss": 0.95}, "metrics": {"mAP50": 0.65}, "history": history},
            )
        )
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert not at.exception, at.exception
    assert any("latest epoch: box_loss 1.500, cls_loss 0.950, mAP50 0.650" in c.value for c in at.caption)
    charts = [c for c in at.get("plotly_chart") if "models.curves" in str(c.proto.id)]
    assert len(charts) == 1


def test_models_page_exports_a_data_set_by_its_recipe(database, settings, app_for) -> None:
    from core.camera import get_scenario
    from core.dataset import read_manifest
    from core.labelling import LabelBox, save_label
    from core.line_simulator import simulate_line
    from core.vocabulary import Verdict

    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=4, rate=1000, seed=3, inspector=None)
    Worker(database, settings).run(until_empty=True)
    engineer = CurrentUser("erin", Role.ENGINEER)
    for inspection_id in (1, 2):
        save_label(database, engineer, inspection_id=inspection_id, verdict=Verdict.REJECT, boxes=[LabelBox("scratch", 10, 10, 60, 30)])
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    at.text_input(key="models.export_name").input("recipe-test")
    at.checkbox(key="models.export_only_line").check()
    at.number_input(key="models.export_gen").set_value(0)
    at.number_input(key="models.export_gen_val").set_value(0)
    next(b for b in at.button if b.label == "Export labelled phones").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    manifest = read_manifest(settings.data_dir / "datasets" / "recipe-test")
    assert manifest["counts"]["labelled_train"] + manifest["counts"]["labelled_val"] == 2
    assert (manifest["counts"]["generated_train"], manifest["counts"]["generated_val"]) == (0, 0)
    assert manifest["recipe"]["line"] == "line-1"
    assert any("recipe-test" in m.value and "2 labelled phones to train on and 0 held out" in m.value for m in at.success), [m.value for m in at.success]
    # Training from it: the suggested name is a version that does not exist yet; a name that exists is refused, and no job starts.
    from core.training_jobs import list_jobs

    assert at.text_input(key="models.train_version").value not in {"scratch-v2"}
    at.text_input(key="models.train_version").input("scratch-v2")
    next(b for b in at.button if b.label == "Start training").click().run()
    assert not at.exception
    assert any("already exists" in e.value for e in at.error), [e.value for e in at.error]
    assert list_jobs(database) == []


def test_the_models_page_says_how_to_add_training_and_starting_a_job_is_refused(database, settings, app_for, monkeypatch, tmp_path) -> None:
    from core import extras
    from core.training_jobs import list_jobs, start_job

    monkeypatch.setattr(extras, "training_available", lambda: False)  # what an edge install finds (tests/test_edge_runtime.py checks the real one)
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert any(extras.TRAIN_EXTRA_INSTALL in info.value for info in at.info), [i.value for i in at.info]
    assert not any(b.label == "Start training" for b in at.button)
    with pytest.raises(ValueError, match=r"shadowline\[train\]"):
        start_job(database, settings, CurrentUser("erin", Role.ENGINEER), dataset=tmp_path, version="v", epochs=1, init_from=None, candidate_for=None)
    assert list_jobs(database) == []


def test_models_page_on_an_installation_without_any_version_says_how_to_add_one(settings, app_for) -> None:
    from db.bootstrap import open_database

    open_database(settings).dispose()  # the schema, no line and no model yet
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert any("No model version registered yet" in i.value for i in at.info)


def test_with_one_version_the_models_page_says_where_a_candidate_comes_from(database, app_for) -> None:
    at = _signed_in(app_for, Role.ENGINEER, MODELS)
    assert at.selectbox(key="models.candidate_choice").options == ["none"]
    assert any("no candidate yet" in c.value and "Retrain" in c.value and "model import" in c.value for c in at.caption)

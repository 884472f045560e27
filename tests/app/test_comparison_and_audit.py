"""Shadow comparison and audit log pages, for the roles that may see them and those that may not."""

from __future__ import annotations

import json

import pytest

from core.auth import CurrentUser
from core.camera import get_scenario
from core.line_simulator import SimulatedInspector, simulate_line
from core.vocabulary import Role
from core.worker import Worker
from db.lines import get_line


def _signed_in(app_for, role: Role):
    at = app_for()
    at.session_state["auth.user"] = CurrentUser(f"a-{role.value}", role)
    return at.run()


def _seed(database, settings) -> None:
    with database.read() as session:
        line = get_line(session=session, name="line-1")
    simulate_line(database, settings, line_id=line.id, line_name=line.name, scenario=get_scenario("normal"), count=16, rate=1000, seed=41, inspector=None)
    Worker(database, settings).run(until_empty=True)
    # A careless inspector, so that there are disagreements to show.
    SimulatedInspector(miss_rate=0.5, false_reject_rate=0.3).answer_open_tasks(database, line_id=line.id)


@pytest.mark.parametrize("role", [Role.ENGINEER, Role.MANAGER])
def test_comparison_shows_agreement_confusion_and_disagreements(database, settings, app_for, role, shipped_model_dir):
    _seed(database, settings)
    at = _signed_in(app_for, role)
    at.switch_page("../pages/shadow_comparison.py").run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Phones judged by both"] == "16"
    assert "Agreement" in metrics and "Cohen's kappa" in metrics and "Escape rate" in metrics
    assert any("too little evidence" in w.value for w in at.warning), "16 pairs is below the minimum"
    assert len(at.get("plotly_chart")) == 2
    assert at.dataframe, "the disagreements are listed"
    # In the floor's words: no column names in the chart, hours (not milliseconds) on hourly buckets.
    trend = json.loads(at.get("plotly_chart")[1].proto.spec)
    names = [series["name"] for series in trend["data"]]
    assert names == ["agreement", "escape rate (defective phones the model would pass)", "over-reject rate (good phones the model would reject)"]
    assert trend["layout"]["xaxis"]["tickformat"] == "%H:%M" and trend["layout"]["xaxis"]["dtick"] == 3_600_000
    assert {"person said", "model said", "who judged"} <= set(at.dataframe[0].value.columns) and "human_verdict" not in at.dataframe[0].value.columns


def test_comparison_with_no_pairs_says_what_to_do(database, app_for):
    at = _signed_in(app_for, Role.ENGINEER)
    at.switch_page("../pages/shadow_comparison.py").run()
    assert not at.exception and any("shadow mode" in i.value for i in at.info)


@pytest.mark.parametrize("role", [Role.MANAGER, Role.ADMIN])
def test_audit_log_lists_searches_and_exports(database, app_for, role, shipped_model_dir):
    at = _signed_in(app_for, role)
    at.switch_page("../pages/audit_log.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert {"model.register", "line.create", "user.create"} <= set(table["action"])
    at.text_input(key="audit.text").input("user.create").run()
    assert set(at.dataframe[0].value["action"]) == {"user.create"}
    assert at.get("download_button"), "CSV export offered"


@pytest.mark.parametrize(
    ("role", "page", "marker"),
    [
        (Role.SUPERVISOR, "../pages/shadow_comparison.py", "comparison.line"),
        (Role.SUPERVISOR, "../pages/audit_log.py", "audit.text"),
        (Role.ENGINEER, "../pages/audit_log.py", "audit.text"),
        (Role.ADMIN, "../pages/shadow_comparison.py", "comparison.line"),
    ],
)
def test_roles_cannot_reach_pages_not_meant_for_them(database, app_for, role, page, marker):
    at = _signed_in(app_for, role)
    # The page's script is not registered for this role's session (its URL shows who it is for instead).
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page(page)
    assert marker not in at.session_state


def test_audit_log_filters_by_kind_so_real_changes_are_not_buried_under_per_phone_decisions(database, app_for):
    from core.ladder import actions
    from core.ladder.gates import Rung
    from core.vocabulary import AutomationLevel
    from db import audit

    with database.write() as session:
        for i in range(300):  # a busy line's per-phone decisions
            audit.record(session=session, actor="sam", action="phone.decide", entity="inspection", entity_id=i, after={"verdict": "pass"})
    actions.move(database, CurrentUser("mo", Role.MANAGER), line_name="line-1", to=Rung(AutomationLevel.HUMAN_ONLY), note="camera cleaned")
    at = _signed_in(app_for, Role.MANAGER)
    at.switch_page("../pages/audit_log.py").run()
    table = at.dataframe[0].value
    assert "phone.decide" not in set(table["action"]) and "line.level" in set(table["action"]), "changes first, decisions only on request"
    moved = table[table["action"] == "line.level"].iloc[0]
    assert (moved["before"], moved["after"], moved["why"]) == ("level: shadow", "level: human only", "camera cleaned"), "before and after in words"
    assert not any(str(value).startswith("{") for value in [*table["before"], *table["after"]])

    at.selectbox(key="audit.kind").set_value("automation levels and line settings").run()
    assert set(at.dataframe[0].value["action"]) == {"line.create", "line.level"}
    at.selectbox(key="audit.kind").set_value("per-phone decisions and corrections").run()
    assert set(at.dataframe[0].value["action"]) == {"phone.decide"} and any("300 entries" in c.value for c in at.caption)


def test_audit_log_shows_moments_in_its_values_in_plant_time_like_its_when_column(database, settings, app_for):
    from datetime import UTC, datetime

    from app.widgets import local_time
    from db import audit

    moment = datetime(2026, 12, 6, 17, 30, 5, tzinfo=UTC)
    with database.write() as session:
        audit.record(
            session=session, actor="station:camera-1@line-2", action="api_key.create", entity="api_key", entity_id=7, after={"expires_at": moment.isoformat()}
        )
    at = _signed_in(app_for, Role.ADMIN)
    at.switch_page("../pages/audit_log.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    row = table[table["action"] == "api_key.create"].iloc[0]
    assert row["after"] == f"expires at: {local_time(moment, settings.plant_timezone, '%Y-%m-%d %H:%M:%S')}", row["after"]
    assert row["who"] == "station:camera-1@line-2"


def test_audit_log_names_models_lines_and_phones_and_shows_only_the_settings_that_changed(database, settings, app_for):
    from core.ladder import actions
    from db import audit
    from db.lines import get_line

    with database.read() as session:
        line = get_line(session=session, name="line-1")
    with database.write() as session:
        audit.record(
            session=session,
            actor="erin",
            action="line.active_model_id+candidate_model_id+previous_model_id",
            entity="line",
            entity_id=line.id,
            before={"active_model_id": line.active_model_id, "candidate_model_id": None},
            after={"active_model_id": None, "candidate_model_id": line.active_model_id},
            note="swap",
        )
        audit.record(session=session, actor="erin", action="label.save", entity="inspection", entity_id=12345, after={"verdict": "pass"})
    actions.set_gates(database, CurrentUser("root", Role.ADMIN), assignments=["canary.min_pairs=10"], note="for the demo")
    at = _signed_in(app_for, Role.ADMIN)
    at.switch_page("../pages/audit_log.py").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table.columns) == ["when", "who", "action", "what", "which", "why", "before", "after"], "the note beside the action"
    swap = table[table["action"].str.startswith("line.active_model_id")].iloc[0]
    assert swap["which"] == "line-1" and swap["why"] == "swap"
    assert swap["before"] == f"active model: {line.active_model_version}; candidate: none", swap["before"]
    assert swap["after"] == f"active model: none; candidate: {line.active_model_version}", swap["after"]
    gates = table[table["action"] == "gates.settings"].iloc[0]
    assert "min pairs" in gates["before"] or "phones judged by both" in gates["before"], gates["before"]
    assert gates["before"].count(";") == 0 and "500" in gates["before"] and "10" in gates["after"], (gates["before"], gates["after"])
    label = table[table["action"] == "label.save"].iloc[0]
    assert label["what"] == "phone" and label["which"] == "12345", "an id with no phone behind it stays an id"


def test_audit_log_finds_a_phone_by_the_serial_it_shows_and_says_when_per_phone_entries_are_hidden(database, app_for, drift_reference):
    # A fresh-eyes walk searched the serial shown in the "which" column and found nothing: entries name phones by id.
    from sqlalchemy import select

    from db import audit
    from db.models import Inspection
    from tests.drift_data import add_phones

    add_phones(database, drift_reference, 3, seed=9)
    with database.read() as session:
        phone = session.scalars(select(Inspection).order_by(Inspection.id)).first()
    with database.write() as session:
        audit.record(session=session, actor="sam", action="phone.decide", entity="inspection", entity_id=phone.id, after={"verdict": "pass"})
    at = _signed_in(app_for, Role.ADMIN)
    at.switch_page("../pages/audit_log.py").run()
    at.text_input(key="audit.text").input(phone.serial).run()
    assert not at.exception
    assert any('1 per-phone entry match: choose "per-phone decisions and corrections"' in i.value for i in at.info), [i.value for i in at.info]
    at.selectbox(key="audit.kind").set_value("per-phone decisions and corrections").run()
    table = at.dataframe[0].value
    assert list(table["which"]) == [phone.serial] and list(table["action"]) == ["phone.decide"]

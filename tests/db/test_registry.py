"""The model registry keeps working whatever a registered card holds."""

from __future__ import annotations

import json

import pytest

from core.detector.card import ModelNotFoundError, card_problem, read_card
from db.models import ModelVersion
from db.registry import list_models


def test_a_card_stored_before_cards_were_checked_never_breaks_the_list(database):
    with database.write() as session:
        session.add(ModelVersion(version="odd", path="/nowhere", card={"evaluation": "not an object", "init_from": [], "decision_threshold": "high"}))
        session.add(ModelVersion(version="odder", path="/nowhere-2", card=None))
    with database.read() as session:
        rows = {row["version"]: row for row in list_models(session=session)}
    assert rows["odd"]["map50"] is None and rows["odd"]["decision_threshold"] is None and rows["odder"]["init_from"] is None
    assert rows["scratch-v2"]["map50"] > 0.5


@pytest.mark.parametrize(
    ("card", "problem"),
    [
        ([], "is not a JSON object"),  # a list, not an object
        ({"imgsz": 320, "weights": {}, "classes": []}, "lacks the field 'version'"),
        ({"version": "../up", "imgsz": 320, "weights": {"m.onnx": {"sha256": "ab"}}, "classes": ["scratch"]}, "invalid version"),  # a path, not a name
        ({"version": "v", "imgsz": "big", "weights": {"m.onnx": {"sha256": "ab"}}, "classes": ["scratch"]}, "invalid imgsz"),
        ({"version": "v", "imgsz": 320, "weights": {"m.onnx": {"sha256": "ab"}}, "classes": {}}, "invalid classes"),  # no class at all
        ({"version": "v", "imgsz": 320, "weights": {"m.onnx": "ab"}, "classes": ["scratch"]}, "invalid weights"),  # hash without its object
        ({"version": "v", "imgsz": 320, "weights": {"m.onnx": {"sha256": "ab"}}, "classes": ["s"], "evaluation": 3}, "invalid 'evaluation'"),
        ({"version": "v", "imgsz": 320, "weights": {"m.onnx": {"sha256": "ab"}}, "classes": ["s"], "decision_threshold": 2}, "invalid decision_threshold"),
        ({"version": "v", "imgsz": [256, 320], "weights": {"m.onnx": {"sha256": "ab"}}, "classes": {"0": "scratch"}}, None),  # sound
    ],
)
def test_cards_are_checked_before_registration(tmp_path, card, problem):
    (tmp_path / "card.json").write_text(json.dumps(card))
    if problem is None:
        assert card_problem(card) is None and read_card(tmp_path)["version"] == "v"
    else:
        assert problem in (card_problem(card) or "")
        with pytest.raises(ModelNotFoundError, match=r"card\.json"):
            read_card(tmp_path)


def test_a_quantized_version_is_listed_as_made_from_its_parent(database):
    from tests.conftest import PROJECT_ROOT

    real = json.loads((PROJECT_ROOT / "models" / "scratch-v2-int8" / "card.json").read_text())
    with database.write() as session:
        session.add(ModelVersion(version="q", path="/nowhere-q", card=real))
        session.add(ModelVersion(version="orphan", path="/nowhere-o", card={"parent": {"version": "x"}}))  # a parent without quantization: not said
    with database.read() as session:
        rows = {row["version"]: row for row in list_models(session=session)}
    assert rows["q"]["init_from"] == "scratch-v2 (INT8 of it)"
    assert rows["orphan"]["init_from"] is None


def test_a_version_on_several_lines_names_each_role_once(database):
    """The Models table's status column: "active on line-1, line-2" rather than the role repeated per line (it was cut off)."""
    from db.lines import add_line, find_line
    from db.registry import list_models

    with database.write() as session:
        shipped = find_line(session=session, name="line-1").active_model_id
        add_line(session=session, name="line-2", actor="test", active_model_id=shipped)
    with database.read() as session:
        status = next(row["status"] for row in list_models(session=session) if row["id"] == shipped)
    assert status == "active on line-1, line-2"

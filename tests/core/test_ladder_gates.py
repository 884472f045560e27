"""The ladder's rungs and gates as data, judged on evidence: met, not met, or waiting for evidence."""

from __future__ import annotations

import pandas as pd
import pytest

from core.comparison import compare
from core.ladder.gates import DEFAULT_GATES, LADDER, GateConfig, RollbackRule, Rung, Status, judge_gate, next_rung, rollback_reason, rung_of
from core.routing import PhoneFacts, PolicySettings, route
from core.vocabulary import AutomationLevel


def _pairs(agree_pass: int, agree_reject: int, escapes: int, over_rejects: int) -> pd.DataFrame:
    rows = [("pass", "pass")] * agree_pass + [("reject", "reject")] * agree_reject + [("reject", "pass")] * escapes + [("pass", "reject")] * over_rejects
    return pd.DataFrame(rows, columns=["human_verdict", "model_verdict"])


def test_the_ladder_climbs_one_rung_at_a_time_through_the_canary_steps() -> None:
    keys = [r.key for r in LADDER]
    assert keys == ["human_only", "shadow", "assist", "partial", "canary", "canary_20", "canary_50", "full"]
    rung = LADDER[0]
    climbed = []
    while (rung := next_rung(rung)) is not None:
        climbed.append(rung.key)
    assert climbed == keys[1:]
    assert set(DEFAULT_GATES) == set(keys[1:]), "every rung above human only has a gate"
    assert rung_of(AutomationLevel.CANARY, 0.21).key == "canary_20"
    assert [k for k, g in DEFAULT_GATES.items() if g.needs_manager] == ["canary", "full"]


def test_a_gate_with_enough_good_evidence_is_met() -> None:
    result = judge_gate(Rung(AutomationLevel.CANARY, 0.05), DEFAULT_GATES["canary"], compare(_pairs(900, 290, 4, 6)), severe_alarms=[])
    assert result.status is Status.MET and result.gate.needs_manager
    escape = next(c for c in result.criteria if c.name == "escape rate")
    assert escape.measured.startswith("escape rate 1.4% (95 % CI") and escape.needs == "<= 8.0% at 95 % confidence on >= 500 phones"


def test_too_little_evidence_is_waiting_never_a_pass() -> None:
    perfect_but_few = judge_gate(Rung(AutomationLevel.ASSIST), DEFAULT_GATES["assist"], compare(_pairs(40, 10, 0, 0)), severe_alarms=[])
    assert perfect_but_few.status is Status.WAITING and "not enough evidence yet" in perfect_but_few.summary
    no_traffic = judge_gate(Rung(AutomationLevel.PARTIAL), DEFAULT_GATES["partial"], compare(_pairs(0, 0, 0, 0)), severe_alarms=[])
    assert no_traffic.status is Status.WAITING


def test_bad_evidence_or_a_severe_alarm_fails_the_gate() -> None:
    many_escapes = judge_gate(Rung(AutomationLevel.PARTIAL), DEFAULT_GATES["partial"], compare(_pairs(500, 100, 40, 5)), severe_alarms=[])
    assert many_escapes.status is Status.NOT_MET and "escape rate" in many_escapes.summary
    drifting = judge_gate(Rung(AutomationLevel.ASSIST), DEFAULT_GATES["assist"], compare(_pairs(400, 100, 2, 2)), severe_alarms=["brightness"])
    assert drifting.status is Status.NOT_MET and "brightness" in drifting.summary


def test_gate_settings_are_editable_and_validated() -> None:
    config = GateConfig().with_setting("canary.min_pairs=50").with_setting("rollback.max_disagreement=0.2").with_setting("assist.min_agreement=none")
    assert config.gate(Rung(AutomationLevel.CANARY, 0.05)).min_pairs == 50 and config.rollback.max_disagreement == 0.2
    assert config.gate(Rung(AutomationLevel.ASSIST)).min_agreement is None
    assert GateConfig.from_dict(config.as_dict()) == config
    with pytest.raises(ValueError, match="no gate"):
        GateConfig().with_setting("canary_99.min_pairs=1")
    with pytest.raises(ValueError, match="no field"):
        GateConfig().with_setting("canary.speed=1")


def test_rollback_waits_for_evidence_then_fires_on_too_many_overrides() -> None:
    rule = RollbackRule(min_pairs=50, max_disagreement=0.10)
    assert rollback_reason(rule, compare(_pairs(10, 5, 10, 10))) is None  # 35 pairs: wait, do not judge
    assert rollback_reason(rule, compare(_pairs(70, 20, 2, 3))) is None
    reason = rollback_reason(rule, compare(_pairs(60, 15, 15, 10)))
    assert reason is not None and "overrode the model on 25 of 100 phones" in reason


@pytest.mark.parametrize("share", [0.05, 0.20, 0.50])
def test_canary_share_over_many_serials_is_within_tolerance(share: float) -> None:
    settings = PolicySettings(canary_share=share)
    n = 20_000
    by_model = sum(
        route(AutomationLevel.CANARY, PhoneFacts(serial=f"SN-{i:07d}", max_confidence=0.1, admitted=True), settings).decider.value == "model" for i in range(n)
    )
    # 4.5 standard deviations of a binomial share: a stable, not a lucky, bound.
    tolerance = 4.5 * (share * (1 - share) / n) ** 0.5
    assert abs(by_model / n - share) < tolerance


@pytest.mark.parametrize(
    ("assignment", "refusal"),
    [
        ("rollback.max_disagreement=2", "would never roll a line back"),  # was accepted and disabled rollback
        ("rollback.max_disagreement=1", "would never roll a line back"),
        ("rollback.max_disagreement=-0.1", r"must be a share in \[0, 1\)"),
        ("rollback.max_disagreement=nan", "finite"),
        ("rollback.min_pairs=0", "at least 1"),
        ("rollback.min_pairs=-5", "at least 1"),
        ("rollback.min_pairs=off", "cannot be turned off"),
        ("rollback.to_level=canary", "below canary"),
        ("rollback.to_level=upstairs", "must be one of"),
        ("canary.min_pairs=0", "at least 1"),  # a gate that needs no evidence
        ("canary.min_pairs=1.5", "whole number"),
        ("full.min_pairs=2000000", "at most 1000000"),
        ("assist.min_agreement=0", "would accept any agreement"),
        ("assist.min_agreement=1.2", r"must be a share in \(0, 1\]"),
        ("full.max_escape_rate=1", "would accept any rate"),
        ("full.max_over_reject_rate=-0.01", r"must be a share in \[0, 1\)"),
        ("full.needs_manager=false", "without a manager's approval"),
        ("full.needs_manager=maybe", "true or false"),  # was read as false
        ("canary.min_pairs=", "expected GATE.FIELD=VALUE"),
    ],
)
def test_a_gate_setting_out_of_range_or_disabling_a_safety_is_refused(assignment, refusal) -> None:
    with pytest.raises(ValueError, match=refusal):
        GateConfig().with_setting(assignment)


def test_off_removes_a_safety_on_purpose_and_is_named() -> None:
    before = GateConfig()
    after = before.with_setting("rollback.max_disagreement=off").with_setting("full.needs_manager=off").with_setting("partial.max_escape_rate=off")
    assert after.rollback.max_disagreement is None and not after.gates["full"].needs_manager
    assert after.safety_offs(before) == ["rollback.max_disagreement", "partial.max_escape_rate", "full.needs_manager"]
    assert after.safety_offs(after) == [], "re-sending what is already off (the page saves every field) is no new change"
    assert GateConfig.from_dict(after.as_dict()) == after
    assert rollback_reason(after.rollback, compare(_pairs(10, 10, 40, 40))) is None, "rollback off: never drops back"
    assert GateConfig().with_setting("shadow.min_pairs=0").gates["shadow"].min_pairs == 0, "shadow needs no evidence by design"
    assert GateConfig().with_setting("rollback.max_disagreement=0").rollback.max_disagreement == 0, "strictest is allowed"

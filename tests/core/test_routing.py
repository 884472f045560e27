"""The routing policy, exhaustively over levels and confidence values."""

from __future__ import annotations

import itertools

import pytest

from core.routing import LEVEL_POLICIES, Decider, PhoneFacts, PolicySettings, route, share_draw
from core.vocabulary import AutomationLevel, Verdict

SETTINGS = PolicySettings(confidence_low=0.2, confidence_high=0.7, decision_threshold=0.4, canary_share=0.2, audit_share=0.1)
CONFIDENCES = [0.0, 0.05, 0.19999, 0.2, 0.39999, 0.4, 0.5, 0.69999, 0.7, 0.95, 1.0]
SERIALS = [f"SN-{i:05d}" for i in range(400)]


def test_every_level_has_a_policy():
    assert set(LEVEL_POLICIES) == set(AutomationLevel)


@pytest.mark.parametrize(("level", "confidence"), list(itertools.product(AutomationLevel, [*CONFIDENCES, None])))
def test_invariants_for_every_level_and_confidence(level, confidence):
    for serial in SERIALS[:50]:
        decision = route(level, PhoneFacts(serial, max_confidence=confidence, admitted=True), SETTINGS)
        # A model decision always carries a verdict, a person's never does.
        assert (decision.model_verdict is not None) == (decision.decider is Decider.MODEL)
        # In shadow and below, people never see the model's boxes before judging.
        if level in (AutomationLevel.HUMAN_ONLY, AutomationLevel.SHADOW):
            assert decision.decider is Decider.HUMAN and not decision.show_model_boxes
        # Without a prediction nobody but a person may decide.
        if confidence is None:
            assert decision.decider is Decider.HUMAN
        assert decision.rule and decision.reason


@pytest.mark.parametrize("level", list(AutomationLevel))
def test_a_failed_image_always_goes_to_a_person(level):
    decision = route(level, PhoneFacts("SN-1", image_ok=False, max_confidence=0.99, admitted=True), SETTINGS)
    assert decision.decider is Decider.HUMAN and decision.rule == "image_failed"


@pytest.mark.parametrize(
    ("confidence", "decider", "verdict", "rule"),
    [
        (0.0, Decider.MODEL, Verdict.PASS, "partial_confident_pass"),  # nothing found
        (0.19999, Decider.MODEL, Verdict.PASS, "partial_confident_pass"),  # just below the low edge
        (0.2, Decider.HUMAN, None, "partial_uncertain"),  # the low edge itself is uncertain
        (0.5, Decider.HUMAN, None, "partial_uncertain"),  # inside the band
        (0.69999, Decider.HUMAN, None, "partial_uncertain"),  # just below the high edge
        (0.7, Decider.MODEL, Verdict.REJECT, "partial_confident_reject"),  # the high edge rejects
        (1.0, Decider.MODEL, Verdict.REJECT, "partial_confident_reject"),
    ],
)
def test_partial_automation_band(confidence, decider, verdict, rule):
    decision = route(AutomationLevel.PARTIAL, PhoneFacts("SN-1", max_confidence=confidence, admitted=True), SETTINGS)
    assert (decision.decider, decision.model_verdict, decision.rule) == (decider, verdict, rule)
    assert decision.show_model_boxes


@pytest.mark.parametrize(("level", "boxes"), [(AutomationLevel.HUMAN_ONLY, False), (AutomationLevel.SHADOW, False), (AutomationLevel.ASSIST, True)])
def test_levels_where_people_decide_everything(level, boxes):
    for confidence in CONFIDENCES:
        decision = route(level, PhoneFacts("SN-9", max_confidence=confidence, admitted=True), SETTINGS)
        assert decision.decider is Decider.HUMAN and decision.show_model_boxes is boxes


@pytest.mark.parametrize("level", [AutomationLevel.SHADOW, AutomationLevel.ASSIST])
def test_where_people_judge_every_phone_the_reason_says_when_the_photo_was_refused(level):
    """The station and the reviewer learn that the photograph is not to be trusted (a black frame, a lens cap)."""
    refused = route(level, PhoneFacts("SN-9", max_confidence=0.1, admitted=False, admission_reason="out of range: brightness 0"), SETTINGS)
    assert refused.decider is Decider.HUMAN and refused.rule == f"{level.value}_human"
    assert "admission check refused the photograph (out of range: brightness 0)" in refused.reason
    admitted = route(level, PhoneFacts("SN-9", max_confidence=0.1, admitted=True), SETTINGS)
    assert "admission" not in admitted.reason


def test_canary_share_is_deterministic_from_the_serial_and_close_to_the_setting():
    decisions = [route(AutomationLevel.CANARY, PhoneFacts(s, max_confidence=0.5, admitted=True), SETTINGS) for s in SERIALS]
    model_share = sum(d.decider is Decider.MODEL for d in decisions) / len(decisions)
    assert 0.14 <= model_share <= 0.26
    again = [route(AutomationLevel.CANARY, PhoneFacts(s, max_confidence=0.5, admitted=True), SETTINGS) for s in SERIALS]
    assert decisions == again
    for d in decisions:
        if d.decider is Decider.MODEL:
            assert d.model_verdict is Verdict.REJECT  # 0.5 >= decision threshold 0.4
            assert d.rule == "canary_model_share"


@pytest.mark.parametrize(("share", "expected"), [(0.0, 0), (1.0, 400)])
def test_canary_share_edges(share, expected):
    settings = PolicySettings(canary_share=share)
    decided = sum(route(AutomationLevel.CANARY, PhoneFacts(s, max_confidence=0.1, admitted=True), settings).decider is Decider.MODEL for s in SERIALS)
    assert decided == expected


def test_full_automation_decides_every_phone_and_sends_an_audit_sample_to_people():
    decisions = [route(AutomationLevel.FULL, PhoneFacts(s, max_confidence=0.1, admitted=True), SETTINGS) for s in SERIALS]
    assert all(d.decider is Decider.MODEL and d.model_verdict is Verdict.PASS for d in decisions)
    audited = [d for d in decisions if d.audit]
    assert 0.05 <= len(audited) / len(decisions) <= 0.16
    assert all(d.needs_human and d.rule == "full_audit_sample" for d in audited)


def test_canary_and_audit_draws_are_independent():
    both = sum(share_draw(s, "canary") < 0.5 and share_draw(s, "audit") < 0.5 for s in SERIALS)
    assert 60 <= both <= 140  # about a quarter, not half (as it would be if the draws were the same)


@pytest.mark.parametrize("bad", [{"confidence_low": 0.8, "confidence_high": 0.2}, {"canary_share": 1.5}, {"audit_share": -0.1}, {"decision_threshold": 2}])
def test_policy_settings_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        PolicySettings(**bad)


@pytest.mark.parametrize(
    ("level", "admitted", "reason"),
    [
        (AutomationLevel.PARTIAL, False, "out of range: brightness 3, reference 61-142"),  # a lens cap
        (AutomationLevel.CANARY, False, "unlike the reference: novelty 0.99"),  # a scene that is not a phone
        (AutomationLevel.FULL, False, "not the line's camera: 1x1 px"),
        (AutomationLevel.FULL, None, None),  # the check did not run: the model may not decide alone
    ],
)
def test_a_phone_not_admitted_goes_to_a_person_with_the_reason(level, admitted, reason):
    for serial in SERIALS[:50]:  # every canary share and audit draw
        decision = route(level, PhoneFacts(serial, max_confidence=0.01, admitted=admitted, admission_reason=reason), SETTINGS)
        assert decision.decider is Decider.HUMAN and decision.model_verdict is None
        assert decision.rule == "not_admitted" and decision.show_model_boxes
        assert (reason or "did not run") in decision.reason


def test_partial_automation_audits_a_random_share_of_all_phones():
    """The gate to canary counts the audit sample: drawn from every phone, band or confident."""
    settings = PolicySettings(audit_share=0.1)
    confident = [route(AutomationLevel.PARTIAL, PhoneFacts(s, max_confidence=0.01, admitted=True), settings) for s in SERIALS]
    band = [route(AutomationLevel.PARTIAL, PhoneFacts(s, max_confidence=0.3, admitted=True), settings) for s in SERIALS]
    assert all(d.decider is Decider.MODEL and d.model_verdict is Verdict.PASS for d in confident)
    assert [d.audit for d in confident] == [d.audit for d in band]  # the same phones, whoever decides
    share = sum(d.audit for d in confident) / len(SERIALS)
    assert 0.05 < share < 0.15
    assert all(d.needs_human for d in confident if d.audit) and not any(d.needs_human for d in confident if not d.audit)
    assert {d.rule for d in confident if d.audit} == {"partial_audit_sample"}

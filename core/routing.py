"""The routing policy: for each phone, who judges it at the line's automation level, and why.

Pure and table-driven. :data:`LEVEL_POLICIES` says, per level, whether the model runs, whether
people see its boxes, and how far the model may decide; :func:`route` applies it to one phone.
When in doubt the answer is a human: a phone whose image failed, whose model is unavailable or
whose prediction is missing always goes to a person; nothing is passed unjudged.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from core.vocabulary import AutomationLevel, Verdict


class ModelAuthority(StrEnum):
    """How much the model may decide on its own at a level."""

    NONE = "none"  # people decide every phone
    CONFIDENT = "confident"  # the model decides when it is confident, people otherwise
    CANARY_SHARE = "canary_share"  # the model decides a fixed share of phones
    ALL = "all"  # the model decides every phone; people audit a sample


class Decider(StrEnum):
    MODEL = "model"
    HUMAN = "human"


@dataclass(frozen=True)
class LevelPolicy:
    """What a level means for one phone (shared/DESIGN.md, 'The automation ladder')."""

    runs_model: bool
    human_sees_boxes: bool
    authority: ModelAuthority


LEVEL_POLICIES: dict[AutomationLevel, LevelPolicy] = {
    AutomationLevel.HUMAN_ONLY: LevelPolicy(runs_model=False, human_sees_boxes=False, authority=ModelAuthority.NONE),
    AutomationLevel.SHADOW: LevelPolicy(runs_model=True, human_sees_boxes=False, authority=ModelAuthority.NONE),
    AutomationLevel.ASSIST: LevelPolicy(runs_model=True, human_sees_boxes=True, authority=ModelAuthority.NONE),
    AutomationLevel.PARTIAL: LevelPolicy(runs_model=True, human_sees_boxes=True, authority=ModelAuthority.CONFIDENT),
    AutomationLevel.CANARY: LevelPolicy(runs_model=True, human_sees_boxes=True, authority=ModelAuthority.CANARY_SHARE),
    AutomationLevel.FULL: LevelPolicy(runs_model=True, human_sees_boxes=True, authority=ModelAuthority.ALL),
}


@dataclass(frozen=True)
class PolicySettings:
    """The per-line knobs of the policy.

    Attributes:
        confidence_low: In partial automation, the model passes a phone with no box at or above this.
        confidence_high: In partial automation, the model rejects a phone with a box at or above this.
        decision_threshold: The model's own verdict: reject at or above this confidence.
        canary_share: Share of phones the model decides in canary (0..1).
        audit_share: Share of model-decided phones also sent to a person, in partial and full
            automation (in partial, so that the evidence for canary measures the model on all its
            phones, not only on the uncertain band people see).
    """

    confidence_low: float = 0.15
    confidence_high: float = 0.6
    decision_threshold: float = 0.35
    canary_share: float = 0.05
    audit_share: float = 0.02

    def __post_init__(self) -> None:
        if not 0 <= self.confidence_low <= self.confidence_high <= 1:
            raise ValueError(f"need 0 <= confidence_low <= confidence_high <= 1, got {self.confidence_low}, {self.confidence_high}")
        for name in ("canary_share", "audit_share", "decision_threshold"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


@dataclass(frozen=True)
class PhoneFacts:
    """What the worker knows about a phone when it routes it.

    Attributes:
        serial: The phone's serial number (canary and audit shares are drawn from it).
        image_ok: False when the image could not be decoded.
        max_confidence: The active model's highest box confidence; None when the model did not run
            or failed on this phone.
        admitted: The admission check's answer: True when the image is like those the active model
            was validated on; False or None (not checked) and the model may not decide it alone.
        admission_reason: Why the phone was not admitted, for people.
    """

    serial: str
    image_ok: bool = True
    max_confidence: float | None = None
    admitted: bool | None = None
    admission_reason: str | None = None


@dataclass(frozen=True)
class RoutingDecision:
    """The policy's answer for one phone.

    Attributes:
        decider: Who makes the final decision.
        model_verdict: The model's verdict when the model decides, else None.
        show_model_boxes: Whether the person judging may see the model's boxes.
        audit: True when the phone is in the random audit sample (partial and full automation): a
            person also checks it when the model decided it; in partial automation it marks the
            phones whose human verdicts measure the model on all phones (the gate to canary).
        rule: A short stable name of the rule that fired (stored and counted).
        reason: One sentence for people.
    """

    decider: Decider
    model_verdict: Verdict | None
    show_model_boxes: bool
    audit: bool
    rule: str
    reason: str

    @property
    def needs_human(self) -> bool:
        return self.decider is Decider.HUMAN or self.audit


def share_draw(serial: str, salt: str) -> float:
    """A uniform number in [0, 1) fixed by the serial: the same phone always draws the same."""
    digest = hashlib.sha256(f"{salt}:{serial}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _human(rule: str, reason: str, boxes: bool) -> RoutingDecision:
    return RoutingDecision(Decider.HUMAN, None, boxes, False, rule, reason)


def route(level: AutomationLevel, facts: PhoneFacts, settings: PolicySettings) -> RoutingDecision:
    """Decide who judges one phone.

    Args:
        level: The line's automation level.
        facts: What is known about the phone.
        settings: The line's policy knobs.
    """
    policy = LEVEL_POLICIES[level]
    if not facts.image_ok:
        return _human("image_failed", "The image could not be read; a person must look at the phone.", False)
    if policy.authority is ModelAuthority.NONE:
        refused = ""
        if facts.admitted is False:  # the model ran (shadow, assist) and its admission check refused the photograph
            refused = f" The admission check refused the photograph ({facts.admission_reason or 'no reason given'}): judge the phone itself, not the photo."
        return _human(f"{level.value}_human", f"At {level.value} a person judges every phone.{refused}", policy.human_sees_boxes)
    if facts.max_confidence is None:
        return _human("model_unavailable", "The model gave no prediction; a person judges instead.", False)
    if facts.admitted is not True:
        why = facts.admission_reason or "the admission check did not run"
        return _human("not_admitted", f"The image is not like those the model was validated on ({why}); a person judges it.", True)

    confidence = facts.max_confidence
    model_verdict = Verdict.REJECT if confidence >= settings.decision_threshold else Verdict.PASS
    if policy.authority is ModelAuthority.CONFIDENT:
        audit = share_draw(facts.serial, "audit") < settings.audit_share
        also = f" Also in the {settings.audit_share:.0%} human audit sample." if audit else ""
        if confidence >= settings.confidence_high:
            return RoutingDecision(
                Decider.MODEL,
                Verdict.REJECT,
                True,
                audit,
                "partial_audit_sample" if audit else "partial_confident_reject",
                f"Defect confidence {confidence:.2f} >= {settings.confidence_high:.2f}.{also}",
            )
        if confidence < settings.confidence_low:
            return RoutingDecision(
                Decider.MODEL,
                Verdict.PASS,
                True,
                audit,
                "partial_audit_sample" if audit else "partial_confident_pass",
                f"No box at or above {settings.confidence_low:.2f}.{also}",
            )
        # The band is in the random audit sample too, so the sample is drawn from all the line's phones.
        return RoutingDecision(
            Decider.HUMAN,
            None,
            True,
            audit,
            "partial_uncertain",
            f"Confidence {confidence:.2f} is inside the uncertain band {settings.confidence_low:.2f}-{settings.confidence_high:.2f}.{also}",
        )
    if policy.authority is ModelAuthority.CANARY_SHARE:
        if share_draw(facts.serial, "canary") < settings.canary_share:
            return RoutingDecision(Decider.MODEL, model_verdict, True, False, "canary_model_share", f"In the model's {settings.canary_share:.0%} canary share.")
        return _human("canary_human_share", f"Outside the model's {settings.canary_share:.0%} canary share.", True)
    audit = share_draw(facts.serial, "audit") < settings.audit_share
    return RoutingDecision(
        Decider.MODEL,
        model_verdict,
        True,
        audit,
        "full_audit_sample" if audit else "full_model",
        f"Full automation; also in the {settings.audit_share:.0%} human audit sample." if audit else "Full automation.",
    )


#: The routing rules in the floor's words (what the Live line and the review queue say instead of the code).
RULE_WORDS: dict[str, str] = {
    "image_failed": "the image could not be read",
    "model_unavailable": "the model gave no answer",
    "not_admitted": "model could not see this phone",
    "human_only_human": "people judge every phone on this line",
    "shadow_human": "a person judges (the model only watches)",
    "assist_human": "a person judges, with the model's boxes",
    "partial_confident_reject": "model sure of a defect",
    "partial_confident_pass": "model sure it is clean",
    "partial_uncertain": "model unsure: a person judges",
    "partial_audit_sample": "model decided; a person checks it too (audit sample)",
    "canary_model_share": "model's canary share",
    "canary_human_share": "people's share of the canary",
    "full_model": "model decided (full automation)",
    "full_audit_sample": "model decided; a person checks it too (audit sample)",
}

_FAILSAFE_WORDS = {
    "budget_exceeded": "no answer within the line's time budget",
    "model_unavailable": "the model was not available",
    "image_unreadable": "the image could not be read",
    "database_busy": "the database was too busy to answer in time",
    "overloaded": "more phones arrived than the service could inspect in time",
    "image_not_stored": "the image store could not take the image (full or read-only)",
    "internal_error": "an internal error",
}


def failsafe_in_words(reason: str) -> str:
    """Why the gate acted on the fail-safe, as the floor says it (``budget_exceeded`` -> "no answer within the line's time budget")."""
    return _FAILSAFE_WORDS.get(reason, reason.replace("_", " "))


def rule_in_words(rule: str | None, *, admission_reason: str | None = None) -> str:
    """One routing rule as the floor says it, e.g. ``not_admitted`` -> "model could not see this phone: <reason>"."""
    if not rule:
        return ""
    if rule.startswith("failsafe_"):
        return f"fail-safe: {failsafe_in_words(rule.removeprefix('failsafe_'))}; a person judges"
    words = RULE_WORDS.get(rule, rule.replace("_", " "))
    if rule == "not_admitted" and admission_reason:
        return f"{words}: {admission_reason}"
    return words

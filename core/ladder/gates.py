"""Rungs of the ladder and the evidence gate in front of each, as data.

The ladder per line: human only, shadow, AI assistance, partial automation, canary at 5 %, 20 %
and 50 % of phones, full automation. Each rung up has a gate: the phones judged by both a person
and the model *at the current rung* (counted from when the line reached it), and bounds on
agreement, escape rate and over-reject rate at 95 % confidence, and no open severe drift alarm.
Too little evidence is ``waiting`` ("not enough evidence yet"), never a pass; a line with no
traffic waits. Moves into canary and into full automation also need a manager's approval.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import Any

from core import validation
from core.comparison import Comparison
from core.vocabulary import AutomationLevel

#: The most phones a gate or the rollback rule may ask for (more would never be reached).
MAX_PAIRS = 1_000_000

#: Shares of phones the model decides in canary, step by step.
CANARY_STEPS: tuple[float, ...] = (0.05, 0.20, 0.50)


@dataclass(frozen=True)
class Rung:
    """A place on the ladder: a level, and the model's share when the level is canary."""

    level: AutomationLevel
    share: float | None = None

    @property
    def key(self) -> str:
        """``canary`` for the first canary step, ``canary_20`` and ``canary_50`` for the next ones."""
        if self.level is AutomationLevel.CANARY and self.share is not None and self.share > CANARY_STEPS[0] + 1e-9:
            return f"canary_{round(self.share * 100)}"
        return self.level.value

    @property
    def label(self) -> str:
        names = {
            AutomationLevel.HUMAN_ONLY: "human only",
            AutomationLevel.SHADOW: "shadow",
            AutomationLevel.ASSIST: "AI assistance",
            AutomationLevel.PARTIAL: "partial automation",
            AutomationLevel.CANARY: "canary",
            AutomationLevel.FULL: "full automation",
        }
        return names[self.level] + (f" {self.share:.0%}" if self.level is AutomationLevel.CANARY and self.share is not None else "")

    def order(self) -> tuple[int, float]:
        return (self.level.rank, self.share or 0.0)


LADDER: tuple[Rung, ...] = (
    Rung(AutomationLevel.HUMAN_ONLY),
    Rung(AutomationLevel.SHADOW),
    Rung(AutomationLevel.ASSIST),
    Rung(AutomationLevel.PARTIAL),
    *(Rung(AutomationLevel.CANARY, share) for share in CANARY_STEPS),
    Rung(AutomationLevel.FULL),
)

#: What each level means for who decides (shown beside the slider).
MEANING: dict[AutomationLevel, str] = {
    AutomationLevel.HUMAN_ONLY: "People judge every phone; the model does not run.",
    AutomationLevel.SHADOW: "People judge every phone; the model runs and is only logged, for comparison.",
    AutomationLevel.ASSIST: "People judge every phone and see the model's boxes.",
    AutomationLevel.PARTIAL: "The model decides when it is confident; people judge the uncertain band.",
    AutomationLevel.CANARY: "The model decides a fixed share of phones; people judge the rest.",
    AutomationLevel.FULL: "The model decides every phone; people audit a random sample.",
}


def rung_of(level: AutomationLevel, canary_share: float) -> Rung:
    """The rung a line is on (its canary share snapped to the nearest step)."""
    if level is not AutomationLevel.CANARY:
        return Rung(level)
    return Rung(level, min(CANARY_STEPS, key=lambda step: abs(step - canary_share)))


def next_rung(rung: Rung) -> Rung | None:
    """The rung above, or None at the top."""
    position = next(i for i, r in enumerate(LADDER) if r.key == rung.key)
    return LADDER[position + 1] if position + 1 < len(LADDER) else None


@dataclass(frozen=True)
class Gate:
    """The evidence needed to move up into a rung.

    Attributes:
        min_pairs: Phones judged by both a person and the model at the current rung.
        min_agreement: The agreement's 95 % lower bound must reach this (None: not required).
        max_escape_rate: The escape rate's 95 % upper bound must not exceed this.
        max_over_reject_rate: The over-reject rate's 95 % upper bound must not exceed this.
        needs_manager: A manager must approve the move (a request is recorded).
    """

    min_pairs: int = 0
    min_agreement: float | None = None
    max_escape_rate: float | None = None
    max_over_reject_rate: float | None = None
    needs_manager: bool = False

    def __post_init__(self) -> None:
        validation.integer("min_pairs", self.min_pairs, minimum=0, maximum=MAX_PAIRS)
        if self.min_agreement is not None:
            validation.share("min_agreement", self.min_agreement, allow_zero=False)
        for name in ("max_escape_rate", "max_over_reject_rate"):
            if getattr(self, name) is not None:
                validation.share(name, getattr(self, name), allow_one=False)


@dataclass(frozen=True)
class RollbackRule:
    """When a line in canary or full automation drops back by itself.

    Attributes:
        min_pairs: Phones judged by both at the current rung before overrides are judged (fewer: wait).
        max_disagreement: Drop back when the disagreement rate's 95 % lower bound exceeds this, in
            [0, 1); None when an admin turned automatic rollback off (``=off``, audited).
        to_level: Where the line drops to.
    """

    min_pairs: int = 50
    max_disagreement: float | None = 0.10
    to_level: AutomationLevel = AutomationLevel.SHADOW

    def __post_init__(self) -> None:
        validation.integer("rollback.min_pairs", self.min_pairs, minimum=1, maximum=MAX_PAIRS)
        if self.max_disagreement is not None:
            validation.share("rollback.max_disagreement", self.max_disagreement, allow_one=False)
        if AutomationLevel(self.to_level).rank >= AutomationLevel.CANARY.rank:
            raise validation.RangeError(f"rollback.to_level must be below canary (where rollback applies), got {AutomationLevel(self.to_level).value}")


DEFAULT_GATES: dict[str, Gate] = {
    "shadow": Gate(),
    "assist": Gate(min_pairs=200, min_agreement=0.85),
    "partial": Gate(min_pairs=300, min_agreement=0.90, max_escape_rate=0.10, max_over_reject_rate=0.10),
    "canary": Gate(min_pairs=500, min_agreement=0.93, max_escape_rate=0.08, max_over_reject_rate=0.08, needs_manager=True),
    "canary_20": Gate(min_pairs=300, min_agreement=0.93, max_escape_rate=0.08, max_over_reject_rate=0.08),
    "canary_50": Gate(min_pairs=300, min_agreement=0.93, max_escape_rate=0.08, max_over_reject_rate=0.08),
    "full": Gate(min_pairs=1000, min_agreement=0.95, max_escape_rate=0.05, max_over_reject_rate=0.05, needs_manager=True),
}


@dataclass(frozen=True)
class GateConfig:
    """The plant's gates and rollback rule (defaults above; an admin edits them)."""

    gates: dict[str, Gate] = field(default_factory=lambda: dict(DEFAULT_GATES))
    rollback: RollbackRule = RollbackRule()

    def gate(self, rung: Rung) -> Gate:
        return self.gates.get(rung.key, DEFAULT_GATES[rung.key])

    def as_dict(self) -> dict[str, Any]:
        return {"gates": {k: asdict(v) for k, v in self.gates.items()}, "rollback": {**asdict(self.rollback), "to_level": self.rollback.to_level.value}}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GateConfig:
        data = data or {}
        unknown = set(data.get("gates", {})) - set(DEFAULT_GATES)
        if unknown:
            raise ValueError(f"no gate {', '.join(sorted(unknown))}; gates: {', '.join(DEFAULT_GATES)}")
        gates = dict(DEFAULT_GATES)
        for key, values in data.get("gates", {}).items():
            gates[key] = replace(DEFAULT_GATES[key], **values)
        rollback = dict(data.get("rollback", {}))
        if "to_level" in rollback:
            rollback["to_level"] = AutomationLevel(rollback["to_level"])
        return cls(gates=gates, rollback=replace(RollbackRule(), **rollback))

    def with_setting(self, assignment: str) -> GateConfig:
        """Apply ``canary.min_pairs=300`` or ``rollback.max_disagreement=0.08``, checked against its range.

        A value that would quietly disable a safety mechanism is refused with the reason: a gate's
        minimum agreement of 0, a maximum rate of 1, a minimum of 0 phones, dropping the manager's
        approval, or a rollback threshold of 1. Removing a bound or automatic rollback takes an
        explicit ``off`` (``rollback.max_disagreement=off``), which the audit log records as such
        (:meth:`safety_offs`); ``none`` is read as ``off``.
        """
        section, name, raw = _split(assignment)
        data = self.as_dict()
        target = data["rollback"] if section == "rollback" else data["gates"].get(section)
        if target is None:
            raise ValueError(f"no gate {section!r}; gates: {', '.join(DEFAULT_GATES)}, or rollback")
        if name not in target:
            raise ValueError(f"{section} has no field {name!r}; fields: {', '.join(target)}")
        key = f"{section}.{name}"
        off = raw.strip().lower() in (validation.OFF, "none")
        value: Any
        if name in ("min_agreement", "max_escape_rate", "max_over_reject_rate", "max_disagreement"):
            if off:
                value = None
            else:
                value = validation.number(key, raw)
                refusal = _disables(name, value)
                if refusal:
                    raise validation.RangeError(f"{key}={raw.strip()} {refusal}; to remove it on purpose, set {key}=off (audited)")
                value = validation.share(key, value, allow_zero=name != "min_agreement", allow_one=name == "min_agreement")
        elif name == "needs_manager":
            if off:
                value = False
            else:
                value = validation.boolean(key, raw)
                if not value and DEFAULT_GATES[section].needs_manager:
                    raise validation.RangeError(
                        f"{key}=false would let a line move into {section} without a manager's approval; "
                        f"to drop the approval on purpose, set {key}=off (audited)"
                    )
        elif name == "min_pairs":
            floor = 1 if section == "rollback" or DEFAULT_GATES[section].min_pairs > 0 else 0
            if off:
                raise validation.RangeError(f"{key} cannot be turned off; it must be a whole number from {floor} to {MAX_PAIRS}")
            value = validation.integer(key, raw, minimum=floor, maximum=MAX_PAIRS)
        elif name == "to_level":
            try:
                value = AutomationLevel(raw.strip()).value
            except ValueError:
                raise validation.RangeError(f"{key} must be one of {', '.join(level.value for level in AutomationLevel)}, got {raw.strip()!r}") from None
        else:  # pragma: no cover - every field is handled above
            raise ValueError(f"{key} cannot be set")
        target[name] = value
        return GateConfig.from_dict(data)

    def safety_offs(self, before: GateConfig) -> list[str]:
        """The safety mechanisms this configuration turns off that ``before`` had on (``rollback.max_disagreement``, ...)."""
        now, then = self.as_dict(), before.as_dict()
        offs = []
        if then["rollback"]["max_disagreement"] is not None and now["rollback"]["max_disagreement"] is None:
            offs.append("rollback.max_disagreement")
        for key, gate in now["gates"].items():
            for name in ("min_agreement", "max_escape_rate", "max_over_reject_rate"):
                if then["gates"][key][name] is not None and gate[name] is None:
                    offs.append(f"{key}.{name}")
            if then["gates"][key]["needs_manager"] and not gate["needs_manager"]:
                offs.append(f"{key}.needs_manager")
        return offs


def _split(assignment: str) -> tuple[str, str, str]:
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or len(parts) != 2 or not raw.strip():
        raise ValueError(f"expected GATE.FIELD=VALUE or rollback.FIELD=VALUE, got {assignment!r}")
    return parts[0], parts[1], raw


def _disables(name: str, value: float) -> str | None:
    """Why ``value`` would switch off the check ``name`` does, or None."""
    if name == "min_agreement" and value <= 0:
        return "would accept any agreement"
    if name in ("max_escape_rate", "max_over_reject_rate") and value >= 1:
        return "would accept any rate"
    if name == "max_disagreement" and value >= 1:
        return "would never roll a line back, whatever people override"
    return None


class Status(StrEnum):
    MET = "met"
    NOT_MET = "not_met"
    WAITING = "waiting"  # not enough evidence yet


@dataclass(frozen=True)
class Criterion:
    name: str
    measured: str
    needs: str
    status: Status


@dataclass(frozen=True)
class GateResult:
    """A gate judged against the evidence, criterion by criterion."""

    target: Rung
    gate: Gate
    status: Status
    criteria: list[Criterion]

    @property
    def summary(self) -> str:
        if self.status is Status.MET:
            return f"the gate to {self.target.label} is met" + (" (a manager must approve)" if self.gate.needs_manager else "")
        failing = [c for c in self.criteria if c.status is not Status.MET]
        head = "not enough evidence yet" if self.status is Status.WAITING else "the gate is not met"
        return f"{head} for {self.target.label}: " + "; ".join(f"{c.measured}, needs {c.needs}" for c in failing)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.key,
            "status": self.status.value,
            "needs_manager": self.gate.needs_manager,
            "criteria": [{**asdict(c), "status": c.status.value} for c in self.criteria],
        }


def _pct(x: float) -> str:
    return f"{x:.1%}"


def judge_gate(target: Rung, gate: Gate, comparison: Comparison, *, severe_alarms: list[str]) -> GateResult:
    """Judge ``gate`` on the phones judged by both at the current rung, and the line's open severe alarms."""
    criteria: list[Criterion] = []
    pairs = comparison.pairs
    enough = pairs >= gate.min_pairs
    criteria.append(Criterion("phones judged by both", f"{pairs} phones", f">= {gate.min_pairs}", Status.MET if enough else Status.WAITING))

    def bound(name: str, rate: Any, limit: float | None, *, lower: bool) -> None:
        if limit is None:
            return
        needs = f"{'>=' if lower else '<='} {_pct(limit)} at 95 % confidence on >= {gate.min_pairs} phones"
        if rate.total == 0 or rate.value is None:
            criteria.append(Criterion(name, f"{name}: no phones yet", needs, Status.WAITING))
            return
        measured = f"{name} {_pct(rate.value)} (95 % CI {_pct(rate.low)}-{_pct(rate.high)}, {rate.count}/{rate.total})"
        bound_ok = rate.low >= limit if lower else rate.high <= limit
        point_ok = rate.value >= limit if lower else rate.value <= limit
        if bound_ok and enough:
            status = Status.MET
        elif point_ok or not enough:
            # Within the limit but not yet at 95 % confidence: more phones will tell.
            status = Status.WAITING
        else:
            status = Status.NOT_MET
        criteria.append(Criterion(name, measured, needs, status))

    bound("agreement", comparison.agreement, gate.min_agreement, lower=True)
    bound("escape rate", comparison.escape, gate.max_escape_rate, lower=False)
    bound("over-reject rate", comparison.over_reject, gate.max_over_reject_rate, lower=False)
    criteria.append(
        Criterion(
            "drift",
            "open severe drift alarms: " + (", ".join(severe_alarms) if severe_alarms else "none"),
            "none",
            Status.NOT_MET if severe_alarms else Status.MET,
        )
    )
    statuses = {c.status for c in criteria}
    status = Status.NOT_MET if Status.NOT_MET in statuses else Status.WAITING if Status.WAITING in statuses else Status.MET
    return GateResult(target, gate, status, criteria)


def rollback_reason(rule: RollbackRule, comparison: Comparison) -> str | None:
    """Why a line in canary or full should drop back now, or None (also while evidence is too thin: it waits)."""
    if rule.max_disagreement is None:  # turned off by an admin (audited)
        return None
    disagreement = comparison.pairs - round((comparison.agreement.value or 0.0) * comparison.pairs)
    if comparison.pairs < rule.min_pairs:
        return None
    from core.comparison import rate

    observed = rate(disagreement, comparison.pairs)
    if observed.low > rule.max_disagreement:
        return (
            f"people overrode the model on {observed.count} of {observed.total} phones ({_pct(observed.value or 0)}, "
            f"95 % lower bound {_pct(observed.low)} > {_pct(rule.max_disagreement)})"
        )
    return None

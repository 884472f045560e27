"""Human against model, phone by phone: the statistics behind shadow mode and the promotion gates.

Input is a table with one row per phone judged by both a person and the model: columns
``human_verdict`` and ``model_verdict`` (``"pass"``/``"reject"``). The person is the reference:
an *escape* is a phone the person rejected that the model would pass; an *over-reject* is a
phone the person passed that the model would reject.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from core.evaluation import wilson_interval
from core.vocabulary import Verdict

#: Fewer paired phones than this and the comparison is reported as too little evidence.
MIN_PAIRS = 30


@dataclass(frozen=True)
class Rate:
    """A proportion with its Wilson 95 % interval and the counts behind it."""

    value: float | None
    low: float
    high: float
    count: int
    total: int

    def describe(self) -> str:
        if self.total == 0 or self.value is None:
            return "no data"
        return f"{self.value:.1%} (95 % CI {self.low:.1%}-{self.high:.1%}, {self.count}/{self.total})"


def rate(count: int, total: int) -> Rate:
    low, high = wilson_interval(count, total)
    return Rate(count / total if total else None, low, high, count, total)


@dataclass(frozen=True)
class Comparison:
    """Agreement between people and the model on the same phones.

    Attributes:
        pairs: Phones judged by both.
        confusion: ``{(human, model): count}`` over pass/reject.
        agreement: Share of phones where both said the same.
        kappa: Cohen's kappa (agreement beyond chance); None when undefined.
        escape: Of the phones people rejected, the share the model would pass.
        over_reject: Of the phones people passed, the share the model would reject.
        enough_evidence: Whether ``pairs >= MIN_PAIRS``.
    """

    pairs: int
    confusion: dict[tuple[str, str], int]
    agreement: Rate
    kappa: float | None
    escape: Rate
    over_reject: Rate
    enough_evidence: bool


def cohens_kappa(confusion: dict[tuple[str, str], int]) -> float | None:
    """Cohen's kappa of a 2x2 confusion table; None when chance agreement is total."""
    labels = [v.value for v in Verdict]
    n = sum(confusion.values())
    if n == 0:
        return None
    observed = sum(confusion.get((v, v), 0) for v in labels) / n
    expected = sum((sum(confusion.get((v, m), 0) for m in labels) / n) * (sum(confusion.get((h, v), 0) for h in labels) / n) for v in labels)
    if expected >= 1.0:
        return None
    return (observed - expected) / (1 - expected)


def compare(pairs: pd.DataFrame) -> Comparison:
    """Compare ``human_verdict`` with ``model_verdict`` over the rows of ``pairs``."""
    labels = [v.value for v in Verdict]
    counts = pairs.groupby(["human_verdict", "model_verdict"]).size() if len(pairs) else pd.Series(dtype=int)
    confusion = {(h, m): int(counts.get((h, m), 0)) for h in labels for m in labels}
    n = sum(confusion.values())
    agree = confusion[("pass", "pass")] + confusion[("reject", "reject")]
    human_rejects = confusion[("reject", "pass")] + confusion[("reject", "reject")]
    human_passes = confusion[("pass", "pass")] + confusion[("pass", "reject")]
    return Comparison(
        pairs=n,
        confusion=confusion,
        agreement=rate(agree, n),
        kappa=cohens_kappa(confusion),
        escape=rate(confusion[("reject", "pass")], human_rejects),
        over_reject=rate(confusion[("pass", "reject")], human_passes),
        enough_evidence=n >= MIN_PAIRS,
    )


def daily_trend(pairs: pd.DataFrame, freq: str = "h") -> pd.DataFrame:
    """Agreement, escape and over-reject rates per time bucket (``decided_at`` column)."""
    if pairs.empty:
        return pd.DataFrame(columns=["bucket", "pairs", "agreement", "escape_rate", "over_reject_rate"])
    frame = pairs.assign(
        bucket=pairs["decided_at"].dt.floor(freq),
        agree=pairs["human_verdict"] == pairs["model_verdict"],
        escape=(pairs["human_verdict"] == "reject") & (pairs["model_verdict"] == "pass"),
        over=(pairs["human_verdict"] == "pass") & (pairs["model_verdict"] == "reject"),
        human_reject=pairs["human_verdict"] == "reject",
    )
    grouped = frame.groupby("bucket")
    out = pd.DataFrame(
        {
            "pairs": grouped.size(),
            "agreement": grouped["agree"].mean(),
            "escape_rate": grouped["escape"].sum() / grouped["human_reject"].sum().where(lambda s: s > 0),
            "over_reject_rate": grouped["over"].sum() / (~frame["human_reject"]).groupby(frame["bucket"]).sum().where(lambda s: s > 0),
        }
    )
    return out.reset_index()

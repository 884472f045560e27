"""Human-vs-model statistics."""

from __future__ import annotations

import pandas as pd
import pytest

from core.comparison import MIN_PAIRS, cohens_kappa, compare, daily_trend


def _pairs(table: dict[tuple[str, str], int]) -> pd.DataFrame:
    rows = [(h, m) for (h, m), n in table.items() for _ in range(n)]
    frame = pd.DataFrame(rows, columns=["human_verdict", "model_verdict"])
    frame["decided_at"] = pd.date_range("2026-11-01", periods=len(frame), freq="min", tz="UTC")
    return frame


def test_kappa_against_a_hand_computed_table():
    # po = 35/50 = 0.7; pe = 25/50*30/50 + 25/50*20/50 = 0.5; kappa = (0.7 - 0.5) / 0.5 = 0.4
    confusion = {("pass", "pass"): 20, ("pass", "reject"): 5, ("reject", "pass"): 10, ("reject", "reject"): 15}
    assert cohens_kappa(confusion) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("table", "kappa"),
    [
        ({("pass", "pass"): 40, ("reject", "reject"): 10}, 1.0),  # perfect agreement
        ({("pass", "pass"): 50}, None),  # everyone always says pass: kappa undefined
        ({}, None),  # no data
    ],
)
def test_kappa_edges(table, kappa):
    assert cohens_kappa(table) == (pytest.approx(kappa) if kappa is not None else None)


def test_escape_and_over_reject_take_the_person_as_reference():
    result = compare(_pairs({("pass", "pass"): 90, ("pass", "reject"): 3, ("reject", "pass"): 2, ("reject", "reject"): 8}))
    assert result.pairs == 103 and result.enough_evidence
    assert result.escape.value == pytest.approx(2 / 10) and (result.escape.count, result.escape.total) == (2, 10)
    assert result.over_reject.value == pytest.approx(3 / 93)
    assert result.escape.low < 0.2 < result.escape.high
    assert "2/10" in result.escape.describe()


def test_too_few_pairs_is_not_enough_evidence_and_empty_is_no_data():
    assert not compare(_pairs({("pass", "pass"): MIN_PAIRS - 1})).enough_evidence
    empty = compare(_pairs({}))
    assert empty.pairs == 0 and empty.agreement.value is None and empty.escape.describe() == "no data"


def test_trend_per_bucket():
    trend = daily_trend(_pairs({("pass", "pass"): 30, ("reject", "pass"): 30}), "h")
    assert trend["pairs"].sum() == 60 and set(trend.columns) >= {"bucket", "agreement", "escape_rate", "over_reject_rate"}

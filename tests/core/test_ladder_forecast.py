"""The pace of a gate's evidence and the estimate of when its phone count is reached."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.ladder.forecast import duration, forecast

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("times", "need", "since", "per_hour", "eta"),
    [
        # 100 phones in the last hour, 200 more needed: two hours
        ([NOW - timedelta(minutes=i * 0.6) for i in range(100)], 300, NOW - timedelta(days=1), 100.0, timedelta(hours=2)),
        # the rung was reached 30 minutes ago: the pace is over those 30 minutes
        ([NOW - timedelta(minutes=i) for i in range(30)], 90, NOW - timedelta(minutes=30), 60.0, timedelta(hours=1)),
        # nothing lately: no estimate
        ([NOW - timedelta(hours=5)] * 10, 300, NOW - timedelta(days=1), 0.0, None),
        # already there
        ([NOW - timedelta(hours=2)] * 50, 50, NOW - timedelta(days=1), 0.0, timedelta(0)),
    ],
)
def test_forecast(times, need, since, per_hour, eta) -> None:
    result = forecast(times, need=need, since=since, now=NOW)
    assert result.per_hour == pytest.approx(per_hour) and result.eta == eta and result.have == len(times)


def test_words() -> None:
    assert [duration(timedelta(minutes=m)) for m in (0.2, 45, 190, 60 * 50)] == ["1 min", "45 min", "3 h 10 min", "2 days 2 h"]
    text = forecast([NOW] * 10, need=20, since=NOW - timedelta(days=1), now=NOW).text
    assert text == "10 phones judged by both per hour (last hour); at this pace the gate's 20 phones are reached in about 1 h (if the other criteria hold)"

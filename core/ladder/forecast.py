"""How fast the evidence for a gate grows, and when, at that pace, the gate's phone count is reached."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

#: The evidence rate is measured over the last this long (or since the rung was reached, if later).
RATE_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Forecast:
    """Phones judged by both per hour lately, and when the count needed is reached at that pace.

    Attributes:
        per_hour: Phones judged by both per hour over :data:`RATE_WINDOW` (0.0 when none came).
        have: Phones judged by both so far at this rung.
        need: Phones the gate needs.
        eta: Time until ``need`` is reached at ``per_hour`` (zero when reached; None when nothing comes).
    """

    per_hour: float
    have: int
    need: int
    eta: timedelta | None
    window: timedelta = RATE_WINDOW

    @property
    def text(self) -> str:
        """``42 phones judged by both per hour (last hour); at this pace the gate's 500 phones are reached in about 3 h 10 min``."""
        over = "last hour" if self.window >= RATE_WINDOW else f"over the {duration(self.window)} since the line reached its rung"
        pace = f"{self.per_hour:,.0f} phone{'' if round(self.per_hour) == 1 else 's'} judged by both per hour ({over})"
        if self.have >= self.need:
            return f"{pace}; the gate's {self.need:,} phones are reached"
        if self.eta is None:
            return f"No phone judged by both lately ({over}): no estimate of when the gate's {self.need:,} phones are reached"
        return f"{pace}; at this pace the gate's {self.need:,} phones are reached in about {duration(self.eta)} (if the other criteria hold)"


def duration(span: timedelta) -> str:
    """``45 min``, ``3 h 10 min``, ``2 days 4 h``."""
    minutes = max(1, round(span.total_seconds() / 60))
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} days {hours} h" if hours else f"{days} days"


def forecast(decided_at: Sequence[datetime], *, need: int, since: datetime, now: datetime) -> Forecast:
    """The pace of the evidence from the times the phones judged by both were judged (any order)."""
    start = max(since, now - RATE_WINDOW)
    hours = max((now - start).total_seconds() / 3600, 1 / 60)
    recent = sum(1 for moment in decided_at if moment >= start)
    per_hour = recent / hours
    have = len(decided_at)
    if have >= need:
        eta: timedelta | None = timedelta(0)
    elif per_hour <= 0:
        eta = None
    else:
        eta = timedelta(hours=(need - have) / per_hour)
    return Forecast(per_hour, have, need, eta, now - start)

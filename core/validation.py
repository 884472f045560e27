"""Valid ranges of settings and arguments, checked where a value is set.

One place for the small checks that the command line (argparse types), the environment settings
and the setters of gates, policy and drift settings share, so a page, the CLI and ``Settings``
refuse the same values with the same words. Each check returns the value, converted, or raises
:class:`RangeError` (a ``ValueError``) whose message names the setting and the allowed range.
"""

from __future__ import annotations

import math

#: The word that turns a safety mechanism off on purpose (recorded in the audit log).
OFF = "off"


class RangeError(ValueError):
    """A value outside its setting's valid range."""


def _number(name: str, raw: object, kind: type[int] | type[float]) -> float:
    if isinstance(raw, bool):
        raise RangeError(f"{name} must be a number, got {raw!r}")
    try:
        if kind is int:
            if isinstance(raw, float):
                if not raw.is_integer():
                    raise ValueError
                return int(raw)
            return int(str(raw).strip()) if not isinstance(raw, int) else raw
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise RangeError(f"{name} must be {what}, got {raw!r}") from None
    if not math.isfinite(value):
        raise RangeError(f"{name} must be a finite number, got {raw!r}")
    return value


def integer(name: str, raw: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``raw`` as a whole number within ``[minimum, maximum]``."""
    value = int(_number(name, raw, int))
    if minimum is not None and value < minimum:
        raise RangeError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise RangeError(f"{name} must be at most {maximum}, got {value}")
    return value


def number(
    name: str,
    raw: object,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
) -> float:
    """``raw`` as a finite number within its bounds (each inclusive unless said otherwise)."""
    value = float(_number(name, raw, float))
    if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
        raise RangeError(f"{name} must be {'greater than' if exclusive_minimum else 'at least'} {minimum:g}, got {value:g}")
    if maximum is not None and (value >= maximum if exclusive_maximum else value > maximum):
        raise RangeError(f"{name} must be {'less than' if exclusive_maximum else 'at most'} {maximum:g}, got {value:g}")
    return value


def share(name: str, raw: object, *, allow_zero: bool = True, allow_one: bool = True) -> float:
    """A share of phones, in [0, 1] (either end excluded on request)."""
    value = float(_number(name, raw, float))
    low_ok = value >= 0 if allow_zero else value > 0
    high_ok = value <= 1 if allow_one else value < 1
    if not (low_ok and high_ok):
        interval = f"{'[' if allow_zero else '('}0, 1{']' if allow_one else ')'}"
        raise RangeError(f"{name} must be a share in {interval}, got {value:g}")
    return value


def boolean(name: str, raw: object) -> bool:
    """``true/false``, ``yes/no``, ``1/0`` (anything else is refused, never read as false)."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no"):
        return False
    raise RangeError(f"{name} must be true or false, got {raw!r}")


def is_off(raw: object) -> bool:
    """Whether ``raw`` is the explicit ``off`` that disables a safety mechanism."""
    return isinstance(raw, str) and raw.strip().lower() == OFF

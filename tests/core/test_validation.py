"""The shared range checks: what they take, what they refuse and how they say it."""

from __future__ import annotations

import pytest

from core import validation


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda: validation.integer("n", "3", minimum=1), 3),
        (lambda: validation.integer("n", 4.0, minimum=1), 4),  # a whole float, as a page's widget may give
        (lambda: validation.number("x", "0.5", minimum=0, exclusive_minimum=True), 0.5),
        (lambda: validation.share("s", "1"), 1.0),
        (lambda: validation.share("s", 0), 0.0),
        (lambda: validation.boolean("b", "Yes"), True),
        (lambda: validation.boolean("b", "0"), False),
        (lambda: validation.is_off(" OFF "), True),
    ],
)
def test_values_in_range_are_taken(call, expected) -> None:
    assert call() == expected


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: validation.integer("batch size", "0", minimum=1), "batch size must be at least 1, got 0"),
        (lambda: validation.integer("n", "1.5"), "n must be a whole number, got '1.5'"),
        (lambda: validation.integer("n", True), "n must be a number"),
        (lambda: validation.integer("n", 11, maximum=10), "n must be at most 10, got 11"),
        (lambda: validation.number("rate", "0", minimum=0, exclusive_minimum=True), "rate must be greater than 0, got 0"),
        (lambda: validation.number("x", "nan"), "x must be a finite number"),
        (lambda: validation.number("x", "-inf"), "x must be a finite number"),
        (lambda: validation.share("s", "1.01"), r"s must be a share in \[0, 1\], got 1.01"),
        (lambda: validation.share("s", "0", allow_zero=False), r"s must be a share in \(0, 1\], got 0"),
        (lambda: validation.share("s", "1", allow_one=False), r"s must be a share in \[0, 1\), got 1"),
        (lambda: validation.boolean("b", "maybe"), "b must be true or false"),
    ],
)
def test_values_out_of_range_are_refused_naming_the_setting(call, message) -> None:
    with pytest.raises(validation.RangeError, match=message):
        call()

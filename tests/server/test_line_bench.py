"""``shadowline bench line``: runs end to end (a real `serve` process, a real HTTP client), and its phones are not repeats."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from core.server.bench import _unique, bench_line, format_line
from tests.server.conftest import phone_jpeg


def test_each_posted_phone_is_the_same_picture_but_not_the_same_bytes() -> None:
    """Cycling a few images must not make every later phone a frozen camera's repeat to the admission check."""
    jpeg = phone_jpeg(0)
    first, second = _unique(jpeg, "r10-1"), _unique(jpeg, "r10-2")
    assert len({hashlib.sha256(data).hexdigest() for data in (jpeg, first, second)}) == 3
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in (jpeg, first, second)]
    assert all(np.array_equal(decoded[0], other) for other in decoded[1:])


def test_bench_line_posts_every_phone_and_reports_against_the_detector(shipped_model_dir) -> None:
    result = bench_line(shipped_model_dir, rates=[4], seconds=3, images=3, max_search=False)
    [run] = result["runs"]
    assert run["phones"] == 12 and run["errors"] == 0 and run["answered_per_s"] > 0, run
    assert result["detector_only"]["images_per_s"] > 0
    assert "phones/s" in format_line(result)

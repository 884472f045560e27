"""``shadowline bench line``: runs end to end (a real `serve` process, a real HTTP client), and its phones are not repeats."""

from __future__ import annotations

import hashlib
import json
import subprocess

import cv2
import numpy as np

from core.server.bench import _unique, format_line
from tests.conftest import cli, cli_env
from tests.server.conftest import phone_jpeg


def test_each_posted_phone_is_the_same_picture_but_not_the_same_bytes() -> None:
    """Cycling a few images must not make every later phone a frozen camera's repeat to the admission check."""
    jpeg = phone_jpeg(0)
    first, second = _unique(jpeg, "r10-1"), _unique(jpeg, "r10-2")
    assert len({hashlib.sha256(data).hexdigest() for data in (jpeg, first, second)}) == 3
    decoded = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in (jpeg, first, second)]
    assert all(np.array_equal(decoded[0], other) for other in decoded[1:])


def test_bench_line_posts_every_phone_and_reports_against_the_detector(shipped_model_dir, settings, tmp_path) -> None:
    """As a user runs it: ``shadowline bench line`` in its own process, bounded, its JSON written to a file."""
    output = tmp_path / "line.json"
    command = cli("bench", "line", "--rates", "4", "--seconds", "3", "--images", "3", "--no-max", "--output", str(output))
    done = subprocess.run(command, env=cli_env(settings), capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(output.read_text())
    [run] = result["runs"]
    assert run["phones"] == 12 and run["errors"] == 0 and run["answered_per_s"] > 0, run
    assert result["detector_only"]["images_per_s"] > 0
    assert set(result["detector_paced"]) == {"4"} and result["detector_paced"]["4"]["p99_ms"] > 0, "the detector alone, paced as the phones were"
    assert "one image every 1/4 s" in done.stdout
    assert "phones/s" in done.stdout and "phones/s" in format_line(result)

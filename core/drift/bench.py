"""Drift benchmark: every statistic on a 100,000-phone window, and loading that window.

``shadowline bench drift --images 100000 --rounds 5`` seeds a temporary database with that many
inspected phones, then per round times (a) reading the window from the database, (b) judging
every metric against the shipped model's reference (small: KS and chi-square) and (c) against a
production reference as large as the window (large: Wasserstein and Jensen-Shannon).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

from core.drift.metrics import DriftConfig, judge
from core.drift.reference import Reference, load_model_reference, stratify


def bench_drift(*, phones: int = 100_000, rounds: int = 5) -> dict[str, Any]:
    from core.history_seed import seed_history
    from core.settings import load_settings
    from db import drift as drift_db
    from db.bootstrap import initialize, open_database
    from db.lines import list_lines

    with tempfile.TemporaryDirectory(prefix="shadowline-bench-drift-") as tmp:
        settings = load_settings({"SHADOWLINE_DATA_DIR": tmp, "SHADOWLINE_ADMIN_PASSWORD": "bench-password"})
        database = open_database(settings)
        initialize(database, settings)
        started = time.perf_counter()
        seed_history(database, settings, count=phones, days=7)
        seed_seconds = time.perf_counter() - started
        with database.read() as session:
            line = list_lines(session=session)[0]
        config = DriftConfig(window_phones=phones)
        model_reference = stratify(load_model_reference(settings.shipped_model_dir), config.reference_defect_rate)
        timings: dict[str, list[float]] = {"load_window": [], "judge_vs_model_reference": [], "judge_vs_large_reference": []}
        window = None
        for _ in range(rounds):
            t0 = time.perf_counter()
            with database.read() as session:
                window, info = drift_db.window_sample(session=session, line_id=line.id, model_version_id=line.active_model_id, config=config)
            t1 = time.perf_counter()
            small = judge(model_reference.sample, window, config)
            t2 = time.perf_counter()
            large = judge(Reference("production", "the window itself", window).sample, window, config)
            t3 = time.perf_counter()
            timings["load_window"].append(t1 - t0)
            timings["judge_vs_model_reference"].append(t2 - t1)
            timings["judge_vs_large_reference"].append(t3 - t2)
        database.dispose()
    assert window is not None
    return {
        "phones_in_window": info.phones,
        "seed_seconds": round(seed_seconds, 1),
        "rounds": rounds,
        "statistics_small_reference": sorted({v.statistic for v in small}),
        "statistics_large_reference": sorted({v.statistic for v in large}),
        "median_seconds": {k: round(statistics.median(v), 4) for k, v in timings.items()},
        "max_seconds": {k: round(max(v), 4) for k, v in timings.items()},
    }


def format_drift(result: dict[str, Any]) -> str:
    lines = [f"drift statistics on a {result['phones_in_window']:,}-phone window, {result['rounds']} rounds (seeding took {result['seed_seconds']} s)"]
    labels = {
        "load_window": "read the window from the database",
        "judge_vs_model_reference": f"all metrics vs the model reference ({', '.join(result['statistics_small_reference'])})",
        "judge_vs_large_reference": f"all metrics vs a 100k-phone reference ({', '.join(result['statistics_large_reference'])})",
    }
    for key, label in labels.items():
        lines.append(f"  {label:<95} median {result['median_seconds'][key]:.3f} s, worst {result['max_seconds'][key]:.3f} s")
    return "\n".join(lines)


__all__ = ["bench_drift", "format_drift"]

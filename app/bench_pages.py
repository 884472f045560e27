"""``shadowline bench pages``: how long each page takes to render over a large history.

Seeds a throw-away installation with N inspections (1,000,000 by default), then renders every
page as each role that may see it through Streamlit's AppTest: one first load (caches cold),
then repeated renders; reports the median and the worst of the repeated ones. A benchmark, not
a test: the figures go to the README, never into a pass/fail assertion.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from core.auth import CurrentUser
from core.settings import PROJECT_ROOT, get_settings, load_settings
from core.vocabulary import Role

PAGES = {
    "live_line": ("../pages/live_line.py", Role.SUPERVISOR),
    "review_queue": ("../pages/review_queue.py", Role.SUPERVISOR),
    "shadow_comparison": ("../pages/shadow_comparison.py", Role.ENGINEER),
    "audit_log": ("../pages/audit_log.py", Role.MANAGER),
}


def bench_pages(*, phones: int = 1_000_000, rounds: int = 5, data_dir: Path | None = None) -> dict[str, Any]:
    from streamlit.testing.v1 import AppTest

    from app import state
    from core.history_seed import seed_history
    from db.bootstrap import initialize, open_database

    data_dir = data_dir or Path(tempfile.mkdtemp(prefix="shadowline-pages-"))
    os.environ["SHADOWLINE_DATA_DIR"] = str(data_dir)
    get_settings.cache_clear()
    settings = load_settings()
    database = open_database(settings)
    initialize(database, settings)
    started = time.perf_counter()
    seed_history(database, settings, count=phones, progress=lambda n: print(f"seeded {n:,} phones", flush=True) if n % 200_000 == 0 else None)
    seed_seconds = time.perf_counter() - started
    database.dispose()
    state.database.clear()

    results: dict[str, Any] = {}
    entrypoint = str(PROJECT_ROOT / "app" / "main.py")
    for name, (page, role) in PAGES.items():
        at = AppTest.from_file(entrypoint, default_timeout=120)
        at.session_state["auth.user"] = CurrentUser(f"bench-{role.value}", role)
        at.run()
        t0 = time.perf_counter()
        at.switch_page(page).run()
        first = time.perf_counter() - t0
        if at.exception:
            raise RuntimeError(f"{name} raised: {at.exception}")
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - t0)
        results[name] = {"role": role.value, "first_s": round(first, 3), "median_s": round(statistics.median(times), 3), "max_s": round(max(times), 3)}
    return {"benchmark": "pages", "phones": phones, "rounds": rounds, "seed_seconds": round(seed_seconds, 1), "data_dir": str(data_dir), "pages": results}


def format_pages(result: dict[str, Any]) -> str:
    lines = [f"page render times over {result['phones']:,} inspections ({result['rounds']} renders after the first; seeding took {result['seed_seconds']} s)"]
    lines.append(f"{'page':<20}{'role':<12}{'first s':>9}{'median s':>10}{'max s':>8}")
    for name, r in result["pages"].items():
        lines.append(f"{name:<20}{r['role']:<12}{r['first_s']:>9.3f}{r['median_s']:>10.3f}{r['max_s']:>8.3f}")
    return "\n".join(lines)

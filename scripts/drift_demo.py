"""Drift demonstration: each drift scenario through the real worker, and a long normal run.

    .venv/bin/python scripts/drift_demo.py                 # every scenario, a fresh temporary database
    .venv/bin/python scripts/drift_demo.py --scenarios dim-lights --normal-phones 0

Each drift scenario runs on its own line, which starts in canary (as if a manager had approved
it): ``--onset`` normal phones, then the drift over ``--ramp`` phones. The camera faults
(``lens-cap``, ``frozen-frame``) start in full automation and strike at once after the onset; the
report counts the phones the model decided alone after the onset (the target is 0). The report says, per
scenario, how many phones after the onset the matching metric alarmed and when the line stepped
down; the normal run counts the alarms that fired where nothing changed (false alarms).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", default=["dim-lights", "blur", "new-colour", "new-defect", "lens-cap", "frozen-frame"])
    parser.add_argument("--phones", type=int, default=1500, help="most phones per drift scenario (it stops once caught and stepped down)")
    parser.add_argument("--onset", type=int, default=300, help="normal phones before each drift starts")
    parser.add_argument("--ramp", type=int, default=200, help="phones over which the drift grows to full strength")
    parser.add_argument("--normal-phones", type=int, default=5000, help="phones of the long normal run (0 to skip)")
    parser.add_argument("--run-on", type=int, default=300, help="phones fed after a line stepped down, to count the alarms that follow")
    parser.add_argument("--output", type=Path, help="write the report as JSON here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shadowline-drift-demo-") as tmp:
        os.environ["SHADOWLINE_DATA_DIR"] = tmp
        os.environ.setdefault("SHADOWLINE_ADMIN_PASSWORD", "drift-demo-password")
        from core.camera import get_scenario
        from core.drift.demo import run_scenario
        from core.settings import load_settings
        from core.vocabulary import AutomationLevel
        from db import audit
        from db.bootstrap import initialize, open_database
        from db.lines import add_line, get_line

        settings = load_settings()
        database = open_database(settings)
        initialize(database, settings)
        with database.read() as session:
            model_id = get_line(session=session, name="line-1").active_model_id
        report = []
        runs = [(name, args.phones, args.onset) for name in args.scenarios]
        if args.normal_phones:
            runs.append(("normal", args.normal_phones, args.normal_phones))
        for name, phones, onset in runs:
            line = f"demo-{name}"
            with database.write() as session:
                add_line(session=session, name=line, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
            fault = bool(get_scenario(name).fault)
            run = run_scenario(
                database,
                settings,
                line_name=line,
                scenario_name=name,
                phones=min(phones, onset + 200) if fault else phones,
                onset=onset,
                ramp=args.ramp,
                # A camera fault is tried where it does the most harm: the model decides every phone.
                level=AutomationLevel.FULL if fault else AutomationLevel.CANARY,
                chunk=5 if fault else 50,
                stop_when_stepped_down=name != "normal",
                run_on=0 if fault else args.run_on,
                progress=lambda text: print(text, flush=True) if text.endswith("0 phones") or "alarms" in text else None,
            )
            report.append(run.as_dict())
            if name == "normal":
                print(
                    f"normal: {run.phones} phones, {run.checks_before_onset} checks: "
                    f"{run.drift_verdicts_before_onset} drift verdicts in {run.metric_checks_before_onset} metric checks, "
                    f"{len(run.alarms)} alarms {sorted(run.alarms)}; "
                    f"level {run.level_before} -> {run.level_after}",
                    flush=True,
                )
            else:
                print(
                    f"{name}: caught {run.caught_after} phones after onset, stepped down after {run.stepped_down_after}; "
                    f"before onset {run.drift_verdicts_before_onset}/{run.metric_checks_before_onset} drift verdicts, {run.false_alarms_before_onset} alarms; "
                    f"alarms {json.dumps({m: (a['severity'], a['after']) for m, a in run.alarms.items()})}; "
                    f"after onset: {run.model_decided_after_onset} decided by the model alone, {run.refused_after_onset} refused by the admission check; "
                    f"{run.alarms_raised} alarms in {run.incidents} incident(s); "
                    f"{run.seconds} s",
                    flush=True,
                )
        database.dispose()
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

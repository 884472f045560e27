"""The retraining loop on the `new-defect` scenario: the shipped model misses chipped edges; label a few
dozen of those phones; retrain; the new version's recall on `new-defect` rises while `normal` holds.

    .venv/bin/python scripts/retrain_demo.py                      # about 30 minutes on 2 CPU cores
    .venv/bin/python scripts/retrain_demo.py --phones 200 --labels 40 --epochs 10 --generated-train 200

Steps, all through the real system on a fresh temporary installation: the line runs in shadow mode
on `new-defect` phones (the real worker, the simulated inspector judging every phone); a simulated
engineer labels the top of the label queue from the generator's truth, through the same function
the Labelling page calls; `dataset export`; the new version is fine-tuned from the shipped model on
that data set, evaluated on the same held-out phones as the shipped model, registered and put in
shadow on the line as its candidate.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _setting(text: str) -> tuple[str, float | str]:
    key, _, value = text.partition("=")
    try:
        return key.strip(), float(value)
    except ValueError:
        return key.strip(), value.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phones", type=int, default=300, help="new-defect phones run through the line")
    parser.add_argument("--labels", type=int, default=60, help="phones the engineer labels from the queue")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--generated-train", type=int, default=600, help="generated normal phones mixed in, so the model keeps what it knew")
    parser.add_argument("--generated-val", type=int, default=40)
    parser.add_argument(
        "--generated-seed", type=int, default=1001, help="run seed of the generated training phones (1001: the shipped model's own training phones)"
    )
    parser.add_argument("--eval-count", type=int, default=300, help="held-out generated phones per scenario for the before/after comparison")
    parser.add_argument("--output", type=Path, help="write the report as JSON here")
    parser.add_argument(
        "--fine-tune", action="append", default=[], metavar="KEY=VALUE", help="an Ultralytics optimiser setting for the fine-tune, e.g. lr0=0.0002 (repeatable)"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="shadowline-retrain-demo-") as tmp:
        os.environ["SHADOWLINE_DATA_DIR"] = tmp
        os.environ.setdefault("SHADOWLINE_ADMIN_PASSWORD", "retrain-demo-password")
        from core import deployment
        from core.dataset import ExportRecipe, export_dataset
        from core.detector.adapter import Detector
        from core.drift.demo import run_scenario
        from core.evaluation import evaluate
        from core.retraining import SIMULATED_ENGINEER, label_queue_from_truth
        from core.settings import load_settings
        from core.training import DataRecipe, TrainConfig, train_from_dataset
        from core.vocabulary import AutomationLevel
        from db.bootstrap import initialize, open_database
        from db.lines import get_line
        from db.registry import register_model_version

        settings = load_settings()
        database = open_database(settings)
        initialize(database, settings)
        run = run_scenario(
            database, settings, line_name="line-1", scenario_name="new-defect", phones=args.phones, level=AutomationLevel.SHADOW, stop_when_stepped_down=False
        )
        print(f"line ran {run.phones} new-defect phones in shadow; alarms: {sorted(run.alarms)}", flush=True)
        with database.read() as session:
            line = get_line(session=session, name="line-1")
        summary = label_queue_from_truth(database, line_id=line.id, count=args.labels)
        print(f"labelled {summary.labelled} phones ({summary.defective} defective) by reason {summary.by_reason}", flush=True)
        generated = DataRecipe(train_count=args.generated_train, val_count=args.generated_val, train_seed=args.generated_seed, val_seed=6000, defect_rate=0.6)
        root = export_dataset(database, settings, ExportRecipe(name="new-defect-labels-1", generated=generated))
        models_dir = Path(tmp) / "models"
        folder = train_from_dataset(
            root,
            TrainConfig(version="scratch-v3-chips", epochs=args.epochs, fine_tune=dict(_setting(text) for text in args.fine_tune)),
            models_dir,
            cache_dir=settings.cache_dir,
            init_from=settings.shipped_model_dir,
            eval_count=50,  # calibrates the new version's decision threshold; the comparison below uses more phones
            progress=lambda text: print(text, flush=True),
        )
        report: dict[str, object] = {"labelling": summary.__dict__, "dataset": json.loads((root / "manifest.json").read_text())["counts"]}
        shipped, candidate = Detector(settings.shipped_model_dir), Detector(folder)
        for scenario in ("new-defect", "normal"):
            before = evaluate(shipped, scenario, args.eval_count, 777_000)
            after = evaluate(candidate, scenario, args.eval_count, 777_000)
            report[scenario] = {
                key: {"before": before[key], "after": after[key]} for key in ("phone_recall", "false_reject_rate", "map50", "escapes", "defective_phones")
            }
            print(
                f"{scenario}: phone recall {before['phone_recall']:.3f} -> {after['phone_recall']:.3f}, "
                f"false-reject rate {before['false_reject_rate']:.3f} -> {after['false_reject_rate']:.3f}, mAP50 {before['map50']:.3f} -> {after['map50']:.3f}",
                flush=True,
            )
        with database.write() as session:
            register_model_version(session=session, model_dir=folder, actor=SIMULATED_ENGINEER.name)
        print(deployment.set_candidate(database, SIMULATED_ENGINEER, line_name="line-1", version="scratch-v3-chips"), flush=True)
        report["decision_threshold"] = candidate.info.decision_threshold
        database.dispose()
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

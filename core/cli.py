"""The ``shadowline`` command line: one sub-command per job, each a thin call into core/ and db/.

Exit codes: 0 on success; 2 for wrong arguments (argparse); 1 with a one-line ``error: ...`` on
any other failure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from core import validation
from core.extras import TrainingUnavailableError
from core.settings import get_settings

if TYPE_CHECKING:
    from db.engine import Database
    from db.lines import LineConfig


class CommandError(Exception):
    """A failure to report as one line and exit code 1."""


def _cmd_train(args: argparse.Namespace) -> int:
    from core.extras import require_training

    require_training("shadowline train")
    from core import training

    settings = get_settings()
    models_dir = Path(args.models_dir) if args.models_dir else settings.models_dir
    recipe = training.DataRecipe(train_count=args.train_count, val_count=args.val_count, train_seed=args.train_seed, val_seed=args.val_seed)
    config = training.TrainConfig(version=args.version, epochs=args.epochs, imgsz=args.imgsz, batch=args.batch, seed=args.seed)
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    if (models_dir / args.version).exists():
        raise CommandError(f"model version {args.version!r} already exists in {models_dir}; choose another --version")
    candidate_user = None
    if args.candidate_for:
        if not args.as_user:
            raise CommandError("--candidate-for needs --as USER (an engineer or manager)")
        database = _database()
        candidate_user = _acting_user(database, args.as_user)
    if args.init_from:
        from core.detector.card import ModelError, read_card, verify_weights

        try:
            verify_weights(Path(args.init_from), read_card(Path(args.init_from)), "ultralytics")
        except ModelError as error:
            raise CommandError(f"--init-from: {error}") from None
    manifest = None
    if args.dataset:
        from core.dataset import DatasetError, read_manifest

        try:
            manifest = read_manifest(Path(args.dataset))
        except DatasetError as error:
            raise CommandError(f"--dataset: {error}") from None
    if manifest is not None:
        folder = training.train_from_dataset(
            Path(args.dataset),
            config,
            models_dir,
            cache_dir=settings.cache_dir,
            init_from=Path(args.init_from) if args.init_from else None,
            eval_count=0 if args.skip_evaluation else args.eval_count,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="train-", dir=settings.cache_dir) as tmp:
            work = Path(tmp)
            data_yaml = training.build_generated_dataset(work / "dataset", recipe)
            folder = training.train_model_version(
                config,
                models_dir,
                data_yaml,
                data_description={"source": "generated", "recipe": asdict(recipe)},
                workdir=work / "runs",
                init_from=Path(args.init_from) if args.init_from else None,
            )
        if not args.skip_evaluation:
            from core.evaluation import record_standard_evaluations

            record_standard_evaluations(folder, count=args.eval_count, progress=print)
        from core.drift.reference import compute_model_reference

        compute_model_reference(folder, progress=print)
    if candidate_user is not None:
        from core import deployment
        from db.registry import register_model_version

        database = _database()
        with database.write() as session:
            register_model_version(session=session, model_dir=folder, actor=candidate_user.name)
        print(deployment.set_candidate(database, candidate_user, line_name=args.candidate_for, version=args.version, note="trained by shadowline train"))
    print(folder)
    return 0


def _cmd_dataset_export(args: argparse.Namespace) -> int:
    from core.dataset import DatasetError, ExportRecipe, export_dataset
    from core.training import DataRecipe

    generated = DataRecipe(
        train_count=args.generated_train, val_count=args.generated_val, train_seed=args.generated_seed, val_seed=args.generated_seed + 1000, defect_rate=0.6
    )
    classes = None
    if args.for_model:
        from core.detector.card import ModelError, class_list, read_card

        try:
            classes = tuple(class_list(read_card(_model_folder(args.for_model))))
        except ModelError as error:
            raise CommandError(f"--for-model: {error}") from None
    try:
        recipe = ExportRecipe(name=args.name, line=args.line, val_share=args.val_share, generated=generated, classes=classes)
        root = export_dataset(_database(), get_settings(), recipe)
    except DatasetError as error:
        raise CommandError(str(error)) from None
    print(root)
    return 0


def _cmd_dataset_import(args: argparse.Namespace) -> int:
    from core.dataset import DatasetError
    from core.dataset_import import import_dataset

    try:
        root = import_dataset(Path(args.path), args.name, get_settings().data_dir / "datasets", val_share=args.val_share, skip_bad=args.skip_bad)
    except DatasetError as error:
        raise CommandError(str(error)) from None
    print(root)
    return 0


def _cmd_job_run(args: argparse.Namespace) -> int:
    from core.extras import require_training
    from core.training_jobs import run_job

    require_training("a training job")

    job = run_job(_database(), get_settings(), args.job, eval_count=args.eval_count)
    print(f"job {job.id}: {job.status}: {job.message or ''}")
    return 0 if job.status == "done" else 1


def _database(*, migrate: bool | None = None, wait_s: float = 0.0):  # noqa: ANN202 - imported lazily so `shadowline --help` stays fast
    """The database; migrated on SQLite or when ``migrate``, else its schema checked (see db.migrate)."""
    from db.bootstrap import open_database

    return open_database(get_settings(), migrate=migrate, wait_s=wait_s)


def _line(database, name: str):  # noqa: ANN001, ANN202
    from db.lines import LineNotFoundError, get_line

    with database.read() as session:
        try:
            return get_line(session=session, name=name)
        except LineNotFoundError as error:
            raise CommandError(str(error)) from None


def _cmd_init(args: argparse.Namespace) -> int:
    from db.bootstrap import initialize
    from db.engine import safe_url

    settings = get_settings()
    database = _database(migrate=True)
    report = initialize(database, settings)
    print(f"database: {safe_url(settings.database_url)}")
    print(f"data folder: {settings.data_dir}")
    if report.model_problem:
        print(f"warning: shipped model not registered: {report.model_problem}", file=sys.stderr)
    else:
        print(f"model: {report.model_version}")
    print(f"lines: {', '.join(report.lines)}")
    _print_first_admin(report.admin_password)
    return 0


def _cmd_migrate(args: argparse.Namespace) -> int:
    from db.engine import safe_url
    from db.migrate import current_revision

    database = _database(migrate=True)
    print(f"database {safe_url(database.url)}: schema at {current_revision(database.engine)}")
    database.dispose()
    return 0


def _print_first_admin(password: str | None) -> None:
    if password:
        print(f"first admin created: user 'admin', password '{password}' (shown this once; set SHADOWLINE_ADMIN_PASSWORD to choose it)")


def _cmd_line_add(args: argparse.Namespace) -> int:
    from db import audit
    from db.lines import add_line, list_lines

    database = _database()
    with database.write() as session:
        lines = list_lines(session=session)
        model_id = lines[0].active_model_id if lines else None
        try:
            add_line(session=session, name=args.name, actor=audit.SYSTEM_ACTOR, active_model_id=model_id)
        except ValueError as error:
            raise CommandError(str(error)) from None
    print(f"line {args.name} ready")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from core.camera import UnknownScenarioError, get_scenario
    from core.line_simulator import SimulatedInspector, simulate_line

    try:
        scenario = get_scenario(args.scenario)
    except UnknownScenarioError as error:
        raise CommandError(str(error)) from None
    if args.ramp is not None or args.onset is not None:
        scenario = scenario.with_ramp(ramp=args.ramp, onset=args.onset)
    try:
        inspector = SimulatedInspector(args.miss_rate, args.false_reject_rate) if args.inspector == "simulated" else None
    except ValueError as error:
        raise CommandError(str(error)) from None
    database = _database()
    line = _line(database, args.line)

    def report(index: int, serial: str, defective: bool) -> None:
        if not args.quiet and (index < 5 or (index + 1) % 50 == 0):
            print(f"phone {index + 1}{'/' + str(args.count) if args.count else ''}: {serial}{' (defective)' if defective else ''}", flush=True)

    try:
        summary = simulate_line(
            database,
            get_settings(),
            line_id=line.id,
            line_name=line.name,
            scenario=scenario,
            count=args.count,
            rate=args.rate,
            seed=args.seed,
            inspector=inspector,
            drain_seconds=args.drain_seconds,
            on_phone=report,
        )
    except ValueError as error:
        raise CommandError(str(error)) from None
    print(f"simulated {summary.phones} phones ({summary.defective} defective) on {line.name} in {summary.seconds:.1f} s; inspector answered {summary.answered}")
    return 0


def _cmd_ingest(args: argparse.Namespace) -> int:
    from core.ingest import IngestRefused, StorageError, expand_paths, ingest_file

    settings = get_settings()
    database = _database()
    line = _line(database, args.line)
    try:
        files = expand_paths(Path(p) for p in args.paths)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    problems = failed = 0
    for source in files:
        path = source.path
        try:
            result = ingest_file(database, settings, line_id=line.id, line_name=line.name, path=path, root=source.root)
        except (IngestRefused, StorageError) as error:
            failed += 1
            print(f"error: {error}" if isinstance(error, IngestRefused) else f"error: {path}: not ingested: {error}", file=sys.stderr, flush=True)
            continue
        if result.problem:
            problems += 1
            print(f"{path}: queued as inspection {result.inspection_id}, NOT AN IMAGE the model can read, a person will judge this phone: {result.problem}")
        else:
            print(f"{path}: queued as inspection {result.inspection_id}")
    print(f"ingested {len(files) - failed} files into {line.name} ({problems} unreadable)" + (f"; {failed} refused or not stored" if failed else ""))
    return 1 if failed else 0


def _cmd_watch(args: argparse.Namespace) -> int:
    from core.ingest import watch_folder

    folder = Path(args.folder)
    if folder.is_symlink():
        raise CommandError(f"{folder}: a symbolic link; name the folder itself")
    if not folder.is_dir():
        raise CommandError(f"{folder}: not a folder")
    database = _database()
    line = _line(database, args.line)
    print(f"watching {folder} for line {line.name} (files move to {folder / 'ingested'} once queued); Ctrl-C stops", flush=True)

    def report(result) -> None:  # noqa: ANN001
        note = f" (unreadable: {result.problem})" if result.problem else ""
        print(f"{result.source.name}: inspection {result.inspection_id}{note}", flush=True)

    def refused(refusal) -> None:  # noqa: ANN001
        print(f"error: {refusal} (moved to {folder / 'refused'})", file=sys.stderr, flush=True)

    def problem(text: str) -> None:
        print(f"error: {text}", file=sys.stderr, flush=True)

    count = watch_folder(
        database,
        get_settings(),
        line_id=line.id,
        line_name=line.name,
        folder=folder,
        on_ingest=report,
        on_refused=refused,
        on_problem=problem,
        poll_seconds=args.poll_seconds,
        max_seconds=args.max_seconds,
    )
    print(f"ingested {count} files")
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from core.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    worker = Worker(
        _database(wait_s=get_settings().schema_wait_s),
        get_settings(),
        batch_size=args.batch_size,
        lease_seconds=args.lease_seconds,
        threads=args.threads,
        freeze_after_load=True,
    )
    worker.install_signal_handlers()
    stats = worker.run(once=args.once, until_empty=args.until_empty, max_seconds=args.max_seconds)
    print(f"worker {worker.worker_id}: processed {stats.processed} phones, {stats.failed_images} unreadable, {stats.lost_leases} lost leases")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from db.heartbeats import watcher_states
    from db.status import line_statuses

    database = _database()
    with database.read() as session:
        statuses = line_statuses(session=session)
        watchers = watcher_states(session=session)
    if args.json:
        print(json.dumps({"lines": [s.as_dict() for s in statuses], "watchers": [w.as_dict() for w in watchers]}, indent=2))
        return 0
    for s in statuses:
        age = "never" if s.worker_heartbeat_age_s is None else f"{s.worker_heartbeat_age_s:.0f} s ago"
        print(f"{s.line}: level={s.level} model={s.active_model} queue={s.queue_depth} open reviews={s.open_review_tasks} {s.phones_per_min:.0f} phones/min")
        simulated = f" ({s.decided_by_simulation} of the human ones by the simulated inspector, not a person)" if s.decided_by_simulation else ""
        print(f"  phones: {_counts(s.counts)} · verdicts: {_counts(s.verdicts)} · decided by: {_counts(s.decided_by)}{simulated}")
        print(f"  worker {'alive' if s.worker_alive else 'NOT RUNNING'} (heartbeat {age}); model: {s.model_status}")
        if s.server_alive is not None:
            print(f"  prediction server {'alive' if s.server_alive else 'NOT ANSWERING'}: {s.server_status}")
        if s.candidate_model or s.pending_requests:
            print(f"  candidate model {s.candidate_model or 'none'}; requests waiting for a manager: {s.pending_requests}")
        for alarm in s.alarms:
            seen = " (acknowledged)" if alarm["acknowledged"] else ""
            over = f", back to normal since {alarm['cleared_at']}, not acknowledged yet" if alarm.get("cleared_at") and not alarm["acknowledged"] else ""
            print(f"  {alarm['severity'].upper()} drift alarm on {alarm['metric']} since {alarm['raised_at']}{over}{seen}")
    for w in watchers:
        state = {"running": "watching", "backing_off": "BACKING OFF"}.get(w.state, w.state) if w.alive else "NOT RUNNING"
        print(f"watcher for {w.line}: {state} (heartbeat {w.age_s:.0f} s ago), {w.ingested} files ingested; {w.detail}")
    return 0


def _model_folder(text: str | None) -> Path:
    """A model version given as a folder or as a name under the models folder (default: the shipped model)."""
    settings = get_settings()
    if not text:
        return settings.shipped_model_dir
    return Path(text) if Path(text).is_dir() else settings.models_dir / text


def _dataset_folder(text: str) -> Path:
    """A stored data set given as a folder or as a name under DATA_DIR/datasets, checked against its manifest."""
    from core.dataset import DatasetError, read_manifest

    root = Path(text) if Path(text).is_dir() else get_settings().data_dir / "datasets" / text
    try:
        read_manifest(root)
    except DatasetError as error:
        raise CommandError(f"--dataset: {error}") from None
    return root


def _refresh_registered_card(folder: Path) -> None:
    """The registry keeps a copy of the card (the line's threshold comes from it): bring it up to date."""
    from db.registry import refresh_card

    with _database().write() as session:
        refresh_card(session=session, model_dir=folder)


def _cmd_evaluate_dataset(args: argparse.Namespace) -> int:
    from core.detector.adapter import Detector
    from core.detector.card import ModelError
    from core.evaluation import describe_result, evaluate_dataset, record_dataset_evaluation

    model_dir = _model_folder(args.model)
    root = _dataset_folder(args.dataset)
    try:
        detector = Detector(model_dir, backend=args.backend)
        if args.record:
            result = record_dataset_evaluation(model_dir, root, progress=print)
        else:
            result = evaluate_dataset(detector, root, args.split)
    except (ModelError, ValueError) as error:
        raise CommandError(str(error)) from None
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model {result['model_version']} on {result['count']} {result['split']} images of data set {result['dataset']}:")
        print("\n".join(describe_result(result)))
        if result["classes_model_lacks"]:
            print(f"  classes of the data set the model lacks (counted as missed): {', '.join(result['classes_model_lacks'])}")
    if args.record:
        from core.drift.reference import compute_model_reference, dataset_images

        print(f"recorded in {model_dir / 'card.json'}; measuring the drift reference and admission check on the data set's images")
        compute_model_reference(model_dir, dataset_images(root), progress=print, description=f"images of data set {root.name}")
        _refresh_registered_card(model_dir)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from core.camera import UnknownScenarioError, get_scenario
    from core.detector.adapter import Detector
    from core.detector.card import ModelError
    from core.evaluation import evaluate

    if args.dataset:
        return _cmd_evaluate_dataset(args)
    try:
        get_scenario(args.scenario)
    except UnknownScenarioError as error:
        raise CommandError(str(error)) from None
    model_dir = _model_folder(args.model)
    try:
        detector = Detector(model_dir, backend=args.backend)
    except ModelError as error:
        raise CommandError(str(error)) from None
    if args.record:
        from core.evaluation import record_standard_evaluations

        results = record_standard_evaluations(model_dir, count=args.count, seed=args.seed)
        print(json.dumps(results, indent=2) if args.json else f"recorded {len(results)} scenarios in {model_dir / 'card.json'}")
        return 0
    result = evaluate(detector, args.scenario, args.count, args.seed)
    text = json.dumps(result, indent=None if args.json else 2)
    default_output = get_settings().data_dir / "evaluations" / f"{result['model_version']}-{args.scenario}-{args.count}-{args.seed}.json"
    output = Path(args.output) if args.output else default_output
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(text)
    else:
        print(f"model {result['model_version']} on {result['count']} phones of '{result['scenario']}' (seed {result['seed']}):")
        for key in ("precision", "recall", "map50", "phone_recall", "escape_rate", "false_reject_rate"):
            print(f"  {key:>18}: {result[key]:.4f}")
        print(f"  {result['defective_phones']} defective phones ({result['escapes']} escaped)")
        print(f"  {result['good_phones']} good phones ({result['false_rejects']} falsely rejected)")
        print(f"written to {output}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from core import bench

    output = Path(args.output) if args.output else None
    if args.target == "pages":
        from app.bench_pages import bench_pages, format_pages

        result = bench_pages(phones=args.images, rounds=args.rounds)
        print(format_pages(result))
        if output:
            output.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.target == "drift":
        from core.drift.bench import bench_drift, format_drift

        result = bench_drift(phones=args.images, rounds=args.rounds)
        print(format_drift(result))
        if output:
            output.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.target == "line":
        from core.server.bench import bench_line, format_line

        result = bench_line(
            get_settings().shipped_model_dir if not args.model else Path(args.model),
            rates=args.rates,
            seconds=args.seconds,
            images=args.images,
            max_search=not args.no_max,
            detector_threads=args.threads,
        )
        print(format_line(result))
        if output:
            output.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.target == "admission":
        result = bench.bench_admission(get_settings().shipped_model_dir if not args.model else Path(args.model), phones=args.images)
        low, high = result["refused_rate_ci95"]
        print(
            f"admission check of {result['model_version']} on {result['phones']} {result['scenario']} phones: "
            f"{result['refused']} sent to people ({result['refused_rate']:.2%}, 95 % CI {low:.2%}-{high:.2%}; target {result['target_rate']:.0%}) "
            f"by check {result['refused_by_check']}; phone recall {result['phone_recall']:.3f} on all phones, "
            f"{result['phone_recall_on_admitted']:.3f} on the admitted ones ({result['defective_phones']} defective)"
        )
        if output:
            output.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    if args.target == "worker" and args.database == "postgres":
        import os

        result = bench.bench_worker_databases(
            get_settings().shipped_model_dir if not args.model else Path(args.model),
            postgres_url=os.environ.get("SHADOWLINE_BENCH_POSTGRES_URL"),
            phones=args.images,
            rounds=args.rounds,
        )
        print(bench.format_database_table(result))
        if output:
            output.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    model_dir = get_settings().shipped_model_dir if not args.model else Path(args.model)
    int8_dir = Path(args.int8) if args.int8 else None
    if int8_dir is not None and not (int8_dir / "card.json").is_file():
        raise CommandError(f"--int8: {int8_dir} is not a model version folder")
    threads = args.threads or None
    if args.target == "detector":
        result = bench.bench_detector(model_dir, images=args.images, rounds=args.rounds, int8_dir=int8_dir, threads=threads)
    else:
        result = bench.bench_worker(model_dir, phones=args.images, rounds=args.rounds, int8_dir=int8_dir, threads=threads, profile=args.profile)
    if args.json:
        print(json.dumps(result))
    else:
        print(bench.format_table(result))
    if output:
        output.write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {output}", file=sys.stderr if args.json else sys.stdout)
    return 0


PASSWORD_ENV = "SHADOWLINE_PASSWORD"


def _acting_user(database, name: str):  # noqa: ANN001, ANN202
    """Sign in as ``--as NAME`` with the password from SHADOWLINE_PASSWORD or a prompt."""
    import getpass
    import os

    from db.users import sign_in

    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        if not sys.stdin.isatty():
            raise CommandError(f"--as {name}: set {PASSWORD_ENV} or run in a terminal to be asked for the password")
        password = getpass.getpass(f"password for {name}: ")
    with database.write() as session:
        result = sign_in(session=session, name=name, password=password)
    if result.user is None:
        raise CommandError(f"--as {name}: {result.message}")
    return result.user


def _print_verdicts(report) -> None:  # noqa: ANN001
    print(f"line {report.line} ({report.level}), model {report.model_version}; window: {report.window.phones} phones")
    print(f"reference: {report.reference or 'none'}" + (f" ({report.reference_error})" if report.reference_error else ""))
    for v in report.verdicts:
        score = "-" if v.score is None else f"{v.score:.3g}"
        flag = {"drift": "DRIFT", "ok": "ok", "inconclusive": "?"}[v.verdict] + (f" ({v.severity})" if v.severity else "")
        print(f"  {v.metric:<18} {flag:<18} {v.statistic:<14} {score:>10}  n={v.n_current:<6} {v.reason}")


def _cmd_drift(args: argparse.Namespace) -> int:
    from core.drift.metrics import DriftConfig
    from core.drift.monitor import DriftMonitor
    from db import drift as drift_db

    database = _database()
    line = _line(database, args.line)
    with database.read() as session:
        config = drift_db.get_config(session=session, line_id=line.id)
    changes = {}
    if args.window_phones is not None:
        changes["window_phones"] = args.window_phones
    if args.window_minutes is not None:
        changes["window_minutes"] = args.window_minutes
    try:
        config = DriftConfig.from_dict({**config.as_dict(), **changes})
    except ValueError as error:
        raise CommandError(str(error)) from None
    monitor = DriftMonitor(database)
    if args.check:
        if changes:
            raise CommandError("--check uses the line's own settings; --window-phones and --window-minutes only change a look without --check")
        outcome = monitor.check(line.id)
        report = outcome.report
    else:
        report = monitor.evaluate(line.name, config=config)
    if args.json:
        data = report.as_dict()
        data["metrics"] = data.pop("verdicts")
        if args.check:
            data["check"] = {
                "id": outcome.check_id,
                "raised": outcome.raised,
                "escalated": outcome.escalated,
                "cleared": outcome.cleared,
                "stepped_down": outcome.stepped_down,
            }
        print(json.dumps(data, indent=2))
        return 0
    _print_verdicts(report)
    if args.check:
        print(f"check {outcome.check_id}: raised {outcome.raised or 'none'}, escalated {outcome.escalated or 'none'}, cleared {outcome.cleared or 'none'}")
        if outcome.stepped_down:
            print(f"line stepped down from {outcome.stepped_down[0]} to {outcome.stepped_down[1]}")
    return 0


def _cmd_drift_settings(args: argparse.Namespace) -> int:
    from core.drift import actions
    from db import drift as drift_db

    database = _database()
    line = _line(database, args.line)
    with database.read() as session:
        config = drift_db.get_config(session=session, line_id=line.id)
    if args.set:
        if not args.as_user:
            raise CommandError("changing drift settings needs --as USER")
        try:
            for assignment in args.set:
                config = actions.parse_setting(config, assignment)
            actions.update_settings(database, _acting_user(database, args.as_user), line_name=line.name, config=config, note=args.note)
        except (*_refusals(), KeyError) as error:
            raise CommandError(str(error).strip("'\"")) from None
    print(json.dumps(config.as_dict(), indent=2))
    return 0


def _cmd_reference_compute(args: argparse.Namespace) -> int:
    from core.drift.reference import ReferenceError, compute_model_reference

    folder = _model_folder(args.model)
    try:
        if args.dataset:
            from core.drift.reference import dataset_images

            root = _dataset_folder(args.dataset)
            compute_model_reference(folder, dataset_images(root), progress=print, description=f"images of data set {root.name}")
        else:
            compute_model_reference(folder, progress=print)
    except ReferenceError as error:
        raise CommandError(str(error)) from None
    _refresh_registered_card(folder)
    return 0


def _cmd_reference_accept(args: argparse.Namespace) -> int:
    from core.drift import actions

    database = _database()
    start, end = args.since, args.until
    if end <= start:
        raise CommandError(f"--until {end:%Y-%m-%d %H:%M} is not after --since {start:%Y-%m-%d %H:%M}")
    user = _acting_user(database, args.as_user)
    try:
        reference_id = actions.accept_production_reference(database, user, line_name=args.line, start=start, end=end, note=args.note)
    except _refusals() as error:
        raise CommandError(str(error)) from None
    print(f"reference {reference_id}: {args.line} is now compared with its production from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC")
    return 0


def _cmd_reference_reset(args: argparse.Namespace) -> int:
    from core.drift import actions

    database = _database()
    user = _acting_user(database, args.as_user)
    try:
        actions.use_model_reference(database, user, line_name=args.line, note=args.note)
    except _refusals() as error:
        raise CommandError(str(error)) from None
    print(f"{args.line} is compared with its model's training and validation images again")
    return 0


def _cmd_alarms_list(args: argparse.Namespace) -> int:
    from db import drift as drift_db

    database = _database()
    line_id = _line(database, args.line).id if args.line else None
    with database.read() as session:
        alarms = drift_db.alarm_history(session=session, line_id=line_id) if args.all else drift_db.current_alarms(session=session, line_id=line_id)
    if args.json:
        print(json.dumps([{"line": a.line, **a.as_status()} for a in alarms], indent=2))
        return 0
    if not alarms:
        print("no open drift alarms")
    for a in alarms:
        state = f"acknowledged by {a.acknowledged_by}" if a.acknowledged else "NOT ACKNOWLEDGED"
        cleared = f", cleared {a.cleared_at:%H:%M:%S}" if a.cleared_at else ", still drifting"
        incident = f" (incident #{a.incident_id})" if a.incident_id else ""
        print(f"#{a.id} {a.line} {a.severity.upper()} {a.metric}{incident} raised {a.raised_at:%Y-%m-%d %H:%M:%S} UTC, {state}{cleared}: {a.reason}")
    return 0


def _cmd_alarms_ack(args: argparse.Namespace) -> int:
    from core.drift import actions

    database = _database()
    user = _acting_user(database, args.as_user)
    try:
        if args.incident:
            incident = actions.acknowledge_incident(database, user, incident_id=args.alarm, note=args.note)
        else:
            alarm = actions.acknowledge(database, user, alarm_id=args.alarm, note=args.note)
    except _refusals() as error:
        raise CommandError(str(error)) from None
    if args.incident:
        print(f"incident #{incident.id} ({incident.text}) acknowledged by {user.name}, with its {len(incident.alarms)} alarm(s)")
    else:
        print(f"alarm #{alarm.id} ({alarm.line} {alarm.metric}) acknowledged by {alarm.acknowledged_by}")
    return 0


def _refusals():  # noqa: ANN202
    """The errors a person's action can be refused with: reported as one line, exit 1."""
    from core.auth import PermissionDeniedError
    from core.deployment import DeploymentError
    from core.ladder.actions import LadderError
    from db.ladder import RequestError
    from db.lines import LineNotFoundError

    return (PermissionDeniedError, DeploymentError, LadderError, RequestError, LineNotFoundError, ValueError)


def _rung(key: str):  # noqa: ANN202
    from core.ladder.gates import LADDER

    for rung in LADDER:
        if rung.key == key:
            return rung
    raise CommandError(f"--to {key!r}: choose one of {', '.join(r.key for r in LADDER)}")


def _cmd_level(args: argparse.Namespace) -> int:
    from core.ladder import actions

    database = _database()
    user = _acting_user(database, args.as_user)
    try:
        outcome = actions.move(database, user, line_name=args.line, to=_rung(args.to), note=args.note)
    except _refusals() as error:
        raise CommandError(str(error) + _simulated_note(database, args.line)) from None
    print(outcome.message)
    return 0


def _simulated_evidence(database: Database, line_name: str) -> tuple[int, int]:
    """Of the phones behind the line's next gate, (how many the simulated inspector judged, how many in all)."""
    from db import ladder as ladder_db
    from db.lines import get_line

    with database.read() as session:
        line = get_line(session=session, name=line_name)
        pairs = ladder_db.evidence_pairs(session=session, line=line, count_simulated=True)
    return ladder_db.simulated_judged(pairs), len(pairs)


def _simulated_note(database: Database, line_name: str) -> str:
    """Why this shell's evidence may differ from the Automation page's: whether the simulated inspector's judgements count."""
    if get_settings().gates_count_simulated:
        return ""
    simulated, _ = _simulated_evidence(database, line_name)
    if not simulated:
        return ""
    return (
        f" (the simulated inspector's {simulated} judgements are not counted here; "
        "SHADOWLINE_GATES_COUNT_SIMULATED=true counts them, as `shadowline up` and its pages do)"
    )


def _cmd_gates(args: argparse.Namespace) -> int:
    from core.ladder import actions
    from db import ladder as ladder_db

    database = _database()
    if args.set:
        user = _acting_user(database, args.as_user) if args.as_user else None
        if user is None:
            raise CommandError("changing the gates needs --as USER (an admin)")
        try:
            actions.set_gates(database, user, assignments=args.set, note=args.note)
        except _refusals() as error:
            raise CommandError(str(error)) from None
    line = _line(database, args.line)
    with database.read() as session:
        config = ladder_db.get_gate_config(session=session)
        result = actions.gate_for_next(session, line)
    here = actions.current_rung(line)
    if args.json:
        print(json.dumps({"line": line.name, "rung": here.key, "next": result.as_dict() if result else None, "config": config.as_dict()}, indent=2))
        return 0
    print(f"{line.name}: {here.label}")
    if result is None:
        print("  at the top of the ladder")
        return 0
    print(f"  next: {result.target.label}: {result.summary}")
    for criterion in result.criteria:
        print(f"    [{criterion.status.value:>7}] {criterion.measured}; needs {criterion.needs}")
    # Said here as on the Automation page: `shadowline up` counts the simulated inspector (a demo), a shell need not.
    counted = get_settings().gates_count_simulated
    simulated, total = _simulated_evidence(database, line.name)
    if simulated:
        variable = "SHADOWLINE_GATES_COUNT_SIMULATED=true"
        how = f"counted ({variable}, a demonstration)" if counted else f"not counted ({variable} counts them, as `up` does)"
        print(f"  the simulated inspector judged {simulated} of the {total} phones: {how}")
    return 0


def _cmd_requests(args: argparse.Namespace) -> int:
    from db import ladder as ladder_db

    database = _database()
    line_id = _line(database, args.line).id if args.line else None
    with database.read() as session:
        requests = ladder_db.list_requests(session=session, line_id=line_id, pending_only=not args.all)
    if args.json:
        print(json.dumps([r.as_dict() for r in requests], indent=2))
        return 0
    if not requests:
        print("no pending requests")
    for r in requests:
        target = f"model switch to {r.evidence.get('to')}" if r.kind == "model_switch" else f"{r.to_level}" + (f" {r.to_share:.0%}" if r.to_share else "")
        decided = f", {r.status} by {r.decided_by}" if r.decided_by else ""
        print(f"#{r.id} {r.line}: {target} asked by {r.requested_by} at {r.requested_at:%Y-%m-%d %H:%M} UTC [{r.status}{decided}]")
    return 0


def _cmd_approve(args: argparse.Namespace) -> int:
    from core.ladder import actions

    database = _database()
    user = _acting_user(database, args.as_user)
    try:
        if args.refuse:
            actions.refuse(database, user, request_id=args.request, note=args.note or "")
            print(f"request {args.request} refused")
            return 0
        outcome = actions.approve(database, user, request_id=args.request, note=args.note)
    except _refusals() as error:
        raise CommandError(str(error)) from None
    print(outcome.message)
    return 0


def _cmd_model(args: argparse.Namespace) -> int:
    from core import deployment
    from db.lines import get_line

    database = _database()
    if args.model_command == "list":
        from db.registry import list_models

        with database.read() as session:
            models = list_models(session=session)
        if args.json:
            print(json.dumps(models, indent=2, default=str))
        else:
            for m in models:
                print(f"{m['version']:<20} {m['status']:<40} onnx sha256 {str(m['onnx_sha256'])[:12]}  {m['path']}")
        return 0
    user = _acting_user(database, args.as_user)
    try:
        if args.model_command == "import":
            _import_model(database, user, args)
        elif args.model_command == "register":
            from db.registry import register_model_version

            deployment.require_register(user)
            with database.write() as session:
                registered = register_model_version(session=session, model_dir=Path(args.path), actor=user.name)
            print(f"registered {registered.version} ({registered.path})")
        elif args.model_command == "candidate":
            print(deployment.set_candidate(database, user, line_name=args.line, version=None if args.version == "none" else args.version, note=args.note))
        elif args.model_command in ("switch", "rollback"):
            # The versions as this command saw them go with it, as a page's do: of two people switching
            # (or rolling back) at once, the second is refused instead of swapping the versions back.
            with database.read() as session:
                seen = get_line(session=session, name=args.line)
            if args.model_command == "switch":
                print(deployment.switch(database, user, line_name=args.line, to_version=args.to or seen.candidate_model_version, note=args.note).message)
            else:
                print(deployment.rollback(database, user, line_name=args.line, from_version=seen.active_model_version, note=args.note))
    except _refusals() as error:
        raise CommandError(str(error)) from None
    except Exception as error:  # a model folder that cannot be registered
        from core.detector.card import ModelError

        if isinstance(error, ModelError):
            raise CommandError(str(error)) from None
        raise
    return 0


def _import_model(database, user, args: argparse.Namespace) -> None:  # noqa: ANN001
    import shutil

    from core import deployment
    from core.model_import import ModelImportError, import_model
    from db.registry import register_model_version

    deployment.require_register(user)
    models_dir = Path(args.models_dir) if args.models_dir else get_settings().models_dir
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    try:
        folder = import_model(Path(args.path), args.version, models_dir, actor=user.name, camera_aspect=args.camera, class_names=classes)
    except ModelImportError as error:
        raise CommandError(str(error)) from None
    try:
        with database.write() as session:
            registered = register_model_version(session=session, model_dir=folder, actor=user.name)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # registers nothing: no folder either
        raise
    print(f"registered {registered.version} ({registered.path})")
    print(f"next: shadowline evaluate --model {registered.version} --dataset NAME --record  (threshold, figures, drift reference and admission check)")


def _parse_camera(text: str) -> float:
    """``WxH`` (e.g. 2448x2048) or ``W:H`` (e.g. 5:4): the camera's aspect width / height."""
    for separator in ("x", ":"):
        if separator in text:
            width, _, height = text.partition(separator)
            try:
                w, h = float(width), float(height)
            except ValueError:
                break
            if w > 0 and h > 0:
                return w / h
    raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT or W:H, got {text!r}")


def _cmd_model_quantize(args: argparse.Namespace) -> int:
    from core.detector.card import ModelError
    from core.quantization import compare_with_parent, quantize_version

    settings = get_settings()
    parent = settings.models_dir / args.version
    if not parent.is_dir() and Path(args.version).is_dir():
        parent = Path(args.version)
    if not parent.is_dir():
        raise CommandError(f"no model version {args.version!r} in {settings.models_dir}")
    try:
        folder = quantize_version(
            parent,
            args.to,
            models_dir=Path(args.models_dir) if args.models_dir else settings.models_dir,
            calibration=args.calibration,
            method=args.method,
            exclude=args.keep_fp32,
            fp32_stem=not args.int8_stem,
            eval_count=args.eval_count,
        )
    except ModelError as error:
        raise CommandError(str(error)) from None
    rows = compare_with_parent(folder, parent)
    if rows:
        print(f"{'scenario':<12}{'mAP50 parent':>14}{'mAP50 INT8':>12}{'phone recall parent':>22}{'phone recall INT8':>20}")
        for row in rows:
            print(
                f"{row['scenario']:<12}{row['parent_map50']:>14.3f}{row['map50']:>12.3f}{row['parent_phone_recall']:>22.3f}{row['phone_recall']:>20.3f}"
                f"  ({row['phones']} phones, seed {row['seed']})"
            )
    print(folder)
    print(f"register it with: shadowline model register {folder} --as USER, then run it in shadow: shadowline model candidate --version {args.to} --as USER")
    return 0


def _read_password(prompt: str) -> str:
    """A password typed twice at a terminal, or the first line of stdin."""
    import getpass

    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass(f"{prompt}: ")
    if getpass.getpass("again: ") != password:
        raise CommandError("the two passwords differ")
    return password


def _cmd_users_add(args: argparse.Namespace) -> int:
    from core.vocabulary import Role
    from db.users import UserError, add_user

    password = _read_password(f"password for {args.name}")
    database = _database()
    actor = _cli_actor()
    with database.write() as session:
        try:
            add_user(session=session, name=args.name, role=Role(args.role), password=password, actor=actor)
        except UserError as error:
            raise CommandError(str(error)) from None
    print(f"user {args.name} ({args.role}) added")
    return 0


def _cmd_users_change(args: argparse.Namespace) -> int:
    from core.vocabulary import Role
    from db.users import UserError, change_user

    password = _read_password(f"new password for {args.name}") if args.password else None
    if args.role is None and args.active is None and password is None:
        raise CommandError("nothing to change: give --role, --disable, --enable or --password")
    actor = _cli_actor()
    with _database().write() as session:
        try:
            role = Role(args.role) if args.role else None
            changed = change_user(session=session, name=args.name, actor=actor, role=role, active=args.active, password=password)
        except UserError as error:
            raise CommandError(str(error)) from None
    print(f"user {args.name}: " + ("; ".join(changed) if changed else "already so, nothing changed"))
    return 0


def _cmd_users_list(args: argparse.Namespace) -> int:
    from db.users import list_users

    with _database().read() as session:
        users = list_users(session=session)
    for user in users:
        print(f"{user.name:<24}{user.role.value:<12}{'active' if user.active else 'disabled'}")
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    from core.supervisor import run_product

    return run_product(
        port=args.port,
        scenario=args.scenario,
        rate=args.rate,
        simulate=not args.no_simulator,
        address=args.address,
        service_port=args.service_port,
        review_wait=args.review_wait,
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    from core.server.run import serve

    return serve(address=args.address, port=args.port, threads=args.threads, detector_threads=args.detector_threads)


def _cmd_station(args: argparse.Namespace) -> int:
    import logging
    import os

    from core.camera import UnknownScenarioError, get_scenario
    from core.line_simulator import SimulatedInspector
    from core.server.station import run_station
    from db.pipeline import attach_simulated_truth

    logging.basicConfig(level=logging.INFO if not args.quiet else logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the gate's own line per phone says what each request did
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its INFO lines (plugins set up) at each start are noise here
    key = os.environ.get("SHADOWLINE_API_KEY")
    if not key:
        raise CommandError("set SHADOWLINE_API_KEY to the station's key (`shadowline keys add --line L --name N`)")
    try:
        scenario = get_scenario(args.scenario)
    except UnknownScenarioError as error:
        raise CommandError(str(error)) from None
    database = _database()
    line = _line(database, args.line)
    inspector = SimulatedInspector() if args.inspector == "simulated" else None

    def on_answer(serial: str, answer: dict[str, object], truth: dict[str, object]) -> None:
        if answer.get("inspection_id") is not None:
            with database.write() as session:
                attach_simulated_truth(session=session, inspection_id=int(str(answer["inspection_id"])), scenario=scenario.name, truth=truth)
        if inspector:
            inspector.answer_open_tasks(database, line_id=line.id, limit=5, waited_seconds=args.inspector_wait)

    gate = run_station(
        args.url, key=key, line=line.name, scenario=scenario, rate=args.rate, count=args.count, seed=args.seed, station=args.name, on_answer=on_answer
    )
    print(f"station {args.name}: gate actions {dict(gate.actions)}, fail-safes {gate.failsafes}")
    return 0


def _cli_actor() -> str:
    import getpass

    # Whoever runs the command line on the server is trusted as an administrator; the log says who
    # (the login name: $USER is often unset in services and containers, the account is not).
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"cli:{name}"


def _counts(counts: dict[str, int]) -> str:
    """``{'pass': 990, 'reject': 393}`` as ``990 pass, 393 reject``."""
    return ", ".join(f"{n:,} {what}" for what, n in counts.items()) or "none"


def _cmd_keys(args: argparse.Namespace) -> int:
    from db.api_keys import ApiKeyError, create_key, list_keys, revoke_key

    database = _database()
    try:
        if args.keys_command == "add":
            with database.write() as session:
                info, key = create_key(session=session, line_name=args.line, name=args.name, actor=_cli_actor())
            print(key)
            print(f"key {info.prefix} for station {info.name} on line {info.line}: shown this once, store it in the station's configuration", file=sys.stderr)
        elif args.keys_command == "revoke":
            with database.write() as session:
                info = revoke_key(session=session, key_ref=args.key, line_name=args.line, actor=_cli_actor())
            print(f"key {info.prefix} ({info.name} on {info.line}) revoked")
        else:
            with database.read() as session:
                keys = list_keys(session=session, line_name=args.line, include_revoked=args.all)
            if not keys:
                print("no keys" + (f" for {args.line}" if args.line else "") + ("" if args.all else " (--all lists revoked ones too)"))
            else:
                print(f"{'key':<10}{'line':<16}{'station':<24}{'created':<18}{'by':<20}state")
            for k in keys:
                state = "active" if k.active else f"revoked {k.revoked_at:%Y-%m-%d %H:%M}"
                print(f"{k.prefix:<10}{k.line:<16}{k.name:<24}{k.created_at:%Y-%m-%d %H:%M}  {k.created_by:<20}{state}")
    except ApiKeyError as error:
        raise CommandError(str(error)) from None
    return 0


def _cmd_line_answer(args: argparse.Namespace) -> int:
    from core.auth import Action, PermissionDeniedError, require
    from db.lines import set_answer_settings

    database = _database()
    line = _line(database, args.line)
    if args.budget_ms is None and args.failsafe is None:
        print(f"{line.name}: answer budget {line.answer_budget_ms} ms, fail-safe {line.failsafe_action}")
        return 0
    if not args.as_user:
        raise CommandError("changing the budget or the fail-safe needs --as USER (an engineer or an admin)")
    user = _acting_user(database, args.as_user)
    try:
        require(user, Action.EDIT_ANSWER_SETTINGS)
        with database.write() as session:
            set_answer_settings(session=session, line_id=line.id, actor=user.name, budget_ms=args.budget_ms, failsafe_action=args.failsafe, note=args.note)
    except (PermissionDeniedError, ValueError) as error:
        raise CommandError(str(error)) from None
    line = _line(database, args.line)
    print(f"{line.name}: answer budget {line.answer_budget_ms} ms, fail-safe {line.failsafe_action}")
    if args.budget_ms is not None:
        _warn_if_budget_is_short(database, line)
    return 0


#: Below this the fail-safe is the likely answer even on a quiet line (the model alone takes 10-40 ms on 2 cores).
SHORT_BUDGET_MS = 50


def _warn_if_budget_is_short(database: Database, line: LineConfig) -> None:
    """Say so when the new budget is shorter than the line's recent answers took: most phones would get the fail-safe."""
    from datetime import timedelta

    from db.gate import answer_summary
    from db.models import utcnow

    with database.read() as session:
        summary = answer_summary(session=session, line_id=line.id, since=utcnow() - timedelta(hours=1))
    if summary.p99_ms is not None and line.answer_budget_ms < summary.p99_ms:
        print(
            f"warning: the last hour's {summary.answers} answers took up to {summary.p99_ms:.0f} ms (p99; median {summary.p50_ms:.0f} ms): "
            f"with {line.answer_budget_ms} ms, the slower phones get the fail-safe ({line.failsafe_action})",
            file=sys.stderr,
        )
    elif summary.p99_ms is None and line.answer_budget_ms < SHORT_BUDGET_MS:
        print(
            f"warning: {line.answer_budget_ms} ms is shorter than the model alone takes on most machines; "
            f"expect the fail-safe ({line.failsafe_action}) for most phones",
            file=sys.stderr,
        )


class _Parser(argparse.ArgumentParser):
    """argparse, with a wrong argument reported as one line ``error: ...`` (exit 2) instead of the usage text."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def _checked(check: Callable[[str], object], name: str) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name  # argparse names the type in some messages
    return parse


def _int(minimum: int, maximum: int | None = None) -> Callable[[str], object]:
    """A whole number within [minimum, maximum]."""
    return _checked(lambda text: validation.integer("the value", text, minimum=minimum, maximum=maximum), "whole number")


_positive = _checked(lambda text: validation.number("the value", text, minimum=0, exclusive_minimum=True), "positive number")
_non_negative = _checked(lambda text: validation.number("the value", text, minimum=0), "number")


def _parse_rates(text: str) -> list[float]:
    rates = [validation.number("a rate", part, minimum=0, exclusive_minimum=True) for part in text.split(",") if part.strip()]
    if not rates:
        raise validation.RangeError(f"give at least one rate (phones per second), e.g. 5,10,20; got {text!r}")
    return rates


_rates = _checked(_parse_rates, "comma-separated positive rates")
_share = _checked(lambda text: validation.share("the value", text), "share")


def _parse_iso_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or time (e.g. 2026-11-22T08:00)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


_iso_time = _checked(_parse_iso_time, "time")


def _parse_scenario(text: str) -> str:
    from core.camera import UnknownScenarioError, get_scenario

    try:
        return get_scenario(text).name
    except UnknownScenarioError as error:
        raise ValueError(str(error).strip("'\"")) from None


_scenario = _checked(_parse_scenario, "scenario")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shadowline", description="Visual inspection from the lab to the line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser("up", help="start everything: database, worker, simulated line and the app")
    up.add_argument("--port", type=_int(1, 65535), default=8501)
    up.add_argument("--address", default="127.0.0.1", help="address the app listens on (0.0.0.0: every interface)")
    up.add_argument("--scenario", type=_scenario, default="normal")
    up.add_argument("--rate", type=_positive, default=2.0, help="simulated phones per second, per line")
    up.add_argument("--no-simulator", action="store_true", help="do not start the simulated line")
    up.add_argument("--service-port", type=_int(1, 65535), default=8600, help="port of the inspection service the simulated station posts to")
    up.add_argument(
        "--review-wait",
        type=_non_negative,
        default=30.0,
        help="on every line but the first: seconds a diverted phone waits for a person before the simulated inspector judges it",
    )
    up.set_defaults(handler=_cmd_up)

    init = commands.add_parser("init", help="create or upgrade the database, register the shipped model, create line-1")
    init.set_defaults(handler=_cmd_init)
    migrate = commands.add_parser("migrate", help="create or upgrade the database schema (one process at a time; workers and services wait for it)")
    migrate.set_defaults(handler=_cmd_migrate)

    line = commands.add_parser("line", help="manage lines")
    line_commands = line.add_subparsers(dest="line_command", required=True, metavar="ACTION")
    line_add = line_commands.add_parser("add", help="add a line (shadow mode, the shipped model)")
    line_add.add_argument("name")
    line_add.set_defaults(handler=_cmd_line_add)
    line_answer = line_commands.add_parser("answer", help="show or change the inspection service's answer budget and fail-safe of a line (engineer, admin)")
    line_answer.add_argument("--line", default="line-1")
    line_answer.add_argument("--budget-ms", type=_int(1, 60_000), help="how long the gate waits for an answer, 1-60000 (default 300)")
    line_answer.add_argument("--failsafe", choices=["to_person", "reject"], help="the gate's action when no answer comes in time (never pass)")
    line_answer.add_argument("--as", dest="as_user", metavar="USER")
    line_answer.add_argument("--note")
    line_answer.set_defaults(handler=_cmd_line_answer)

    serve = commands.add_parser("serve", help="the HTTP inspection service the line's camera station posts phones to")
    serve.add_argument("--port", type=_int(1, 65535), default=8600)
    serve.add_argument("--address", default="127.0.0.1", help="address to listen on (the plant network's, or 0.0.0.0)")
    serve.add_argument("--threads", type=_int(0, 1024), default=0, help="phones inspected at once (0: one per core)")
    serve.add_argument("--detector-threads", type=_int(0, 1024), default=0, help="detector CPU threads per phone (0: one per core)")
    serve.set_defaults(handler=_cmd_serve)

    station = commands.add_parser("station", help="a simulated camera station and reject gate posting phones to the inspection service")
    station.add_argument("--url", default="http://127.0.0.1:8600")
    station.add_argument("--line", default="line-1")
    station.add_argument("--name", default="camera-1", help="the station's name")
    station.add_argument("--scenario", type=_scenario, default="normal")
    station.add_argument("--rate", type=_positive, default=2.0, help="phones per second")
    station.add_argument("--count", type=_int(1), help="phones to post (default: until Ctrl-C)")
    station.add_argument("--seed", type=_int(0), default=1)
    station.add_argument("--inspector", choices=["simulated", "none"], default="simulated", help="answer the diverted phones with the simulated inspector")
    station.add_argument(
        "--inspector-wait", type=_non_negative, default=0.0, help="seconds a diverted phone waits for a person before the simulated inspector judges it"
    )
    station.add_argument("--quiet", action="store_true")
    station.set_defaults(handler=_cmd_station)

    keys = commands.add_parser("keys", help="API keys of the inspection service, one per station and line")
    key_commands = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    keys_add = key_commands.add_parser("add", help="make a key for a station on a line; prints it once")
    keys_add.add_argument("--line", required=True)
    keys_add.add_argument("--name", required=True, help="the station's name")
    keys_add.set_defaults(handler=_cmd_keys)
    keys_list = key_commands.add_parser("list", help="keys (never the keys themselves)")
    keys_list.add_argument("--line")
    keys_list.add_argument("--all", action="store_true", help="revoked keys too")
    keys_list.set_defaults(handler=_cmd_keys)
    keys_revoke = key_commands.add_parser("revoke", help="revoke a key by its prefix (or by station name with --line)")
    keys_revoke.add_argument("key", help="the key's prefix as `keys list` shows it, or the station name with --line")
    keys_revoke.add_argument("--line")
    keys_revoke.set_defaults(handler=_cmd_keys)

    users = commands.add_parser("users", help="manage the people who sign in")
    user_commands = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    users_add = user_commands.add_parser("add", help="add a user (password from a prompt, or the first line of stdin)")
    users_add.add_argument("name")
    users_add.add_argument("--role", required=True, choices=["supervisor", "engineer", "manager", "admin"])
    users_add.set_defaults(handler=_cmd_users_add)
    users_change = user_commands.add_parser(
        "change", help="change a user's role, disable or enable them, or set their password (disabling or a new password signs them out everywhere)"
    )
    users_change.add_argument("name")
    users_change.add_argument("--role", choices=["supervisor", "engineer", "manager", "admin"])
    enable = users_change.add_mutually_exclusive_group()
    enable.add_argument("--disable", dest="active", action="store_false", default=None, help="no more sign-ins; open sessions end")
    enable.add_argument("--enable", dest="active", action="store_true", default=None, help="may sign in again")
    users_change.add_argument("--password", action="store_true", help="set a new password (from a prompt, or the first line of stdin)")
    users_change.set_defaults(handler=_cmd_users_change)
    users_list = user_commands.add_parser("list", help="list users and roles")
    users_list.set_defaults(handler=_cmd_users_list)

    sim = commands.add_parser("simulate", help="feed a line from the synthetic camera")
    sim.add_argument("--line", default="line-1")
    sim.add_argument("--scenario", default="normal")
    sim.add_argument("--count", type=_int(1), help="phones to feed (default: until Ctrl-C)")
    sim.add_argument("--rate", type=_positive, default=2.0, help="phones per second")
    sim.add_argument("--seed", type=_int(0), default=1)
    sim.add_argument("--ramp", type=_int(0), help="phones over which the scenario's drift grows (default 200)")
    sim.add_argument("--onset", type=_int(0), help="phones at normal conditions before the drift starts")
    sim.add_argument("--inspector", choices=["simulated", "none"], default="simulated", help="answer human tasks with the simulated inspector")
    sim.add_argument("--miss-rate", type=_share, default=0.02)
    sim.add_argument("--false-reject-rate", type=_share, default=0.01)
    sim.add_argument("--drain-seconds", type=_non_negative, default=60.0, help="after the last phone, keep answering tasks this long at most")
    sim.add_argument("--quiet", action="store_true")
    sim.set_defaults(handler=_cmd_simulate)

    ingest = commands.add_parser("ingest", help="queue image files (or folders of them) from a camera")
    ingest.add_argument("paths", nargs="+")
    ingest.add_argument("--line", default="line-1")
    ingest.set_defaults(handler=_cmd_ingest)

    watch = commands.add_parser("watch", help="queue files as they appear in a camera's drop folder")
    watch.add_argument("folder")
    watch.add_argument("--line", default="line-1")
    watch.add_argument("--poll-seconds", type=_non_negative, default=1.0)
    watch.add_argument("--max-seconds", type=_positive, help="stop after this long (default: until Ctrl-C)")
    watch.set_defaults(handler=_cmd_watch)

    worker = commands.add_parser("worker", help="run the background worker")
    worker.add_argument("--once", action="store_true", help="process one batch and stop")
    worker.add_argument("--until-empty", action="store_true", help="stop when the queue is empty")
    worker.add_argument("--batch-size", type=_int(1, 10_000), default=None, help="phones claimed per transaction (1-10000; default 16 per phone at once)")
    worker.add_argument("--lease-seconds", type=_positive, default=30.0, help="how long a claim holds (> 0)")
    worker.add_argument("--threads", type=_int(0, 1024), default=0, help="cores for inference: that many phones at once, one thread each (0: every core)")
    worker.add_argument("--max-seconds", type=_positive)
    worker.set_defaults(handler=_cmd_worker)

    status = commands.add_parser("status", help="per line: level, queue, counts, throughput, worker, model")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_cmd_status)

    evaluate = commands.add_parser("evaluate", help="measure a model version on held-out generated phones or on a stored data set")
    evaluate.add_argument("--model", help="model version folder or name under models/ (default: the shipped model)")
    evaluate.add_argument("--scenario", default="normal")
    evaluate.add_argument("--count", type=_int(1), default=500)
    evaluate.add_argument("--seed", type=_int(0), default=777_000)
    evaluate.add_argument("--backend", choices=["auto", "onnx", "ultralytics"], default="auto")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--output", help="write the JSON here (default: DATA_DIR/evaluations/VERSION-SCENARIO-COUNT-SEED.json)")
    evaluate.add_argument(
        "--record",
        action="store_true",
        help="write into the card: every standard scenario; with --dataset its val split's threshold, figures, drift reference and admission check",
    )
    evaluate.add_argument("--dataset", help="evaluate on a stored data set (name under DATA_DIR/datasets or a folder) instead of generated phones")
    evaluate.add_argument("--split", choices=["train", "val"], default="val", help="split of --dataset to evaluate on")
    evaluate.set_defaults(handler=_cmd_evaluate)

    bench = commands.add_parser("bench", help="benchmarks: detector backends, worker throughput")
    bench.add_argument("target", choices=["detector", "worker", "pages", "drift", "admission", "line"])
    bench.add_argument(
        "--rates",
        type=_rates,
        default=[5.0, 10.0, 20.0],
        help="line: arrival rates in phones/s, e.g. 5,10,20 (then the highest sustained one is searched)",
    )
    bench.add_argument("--seconds", type=_positive, default=60.0, help="line: seconds per rate")
    bench.add_argument("--no-max", action="store_true", help="line: skip the search for the highest sustained rate")
    bench.add_argument("--model", help="model version folder (default: the shipped model)")
    bench.add_argument("--int8", help="detector, worker: the INT8 version folder (default: <model>-int8 beside the model, when it exists)")
    bench.add_argument(
        "--threads", type=_int(0), default=0, help="detector, worker: CPU threads per path; line: the service's detector threads per phone (0: every core)"
    )
    bench.add_argument("--profile", action="store_true", help="worker: also profile one worker round per model (cProfile) and say where its time goes")
    bench.add_argument("--json", action="store_true", help="detector, worker: print the result as one JSON object")
    bench.add_argument("--images", type=_int(1), default=100, help="images (phones) per round; for pages, inspections seeded (e.g. 1000000)")
    bench.add_argument("--rounds", type=_int(1), default=3, help="rounds, alternating the compared paths")
    bench.add_argument(
        "--database",
        choices=["sqlite", "postgres"],
        default="sqlite",
        help="worker: postgres runs the worker on SQLite beside PostgreSQL, 1 and 2 worker processes (a throw-away server, or SHADOWLINE_BENCH_POSTGRES_URL's)",
    )
    bench.add_argument("--output", help="write the JSON result to this file")
    bench.set_defaults(handler=_cmd_bench)

    level = commands.add_parser("level", help="move a line on the automation ladder (down at once; up through the gate)")
    level.add_argument("--line", default="line-1")
    level.add_argument("--to", required=True, help="human_only, shadow, assist, partial, canary, canary_20, canary_50 or full")
    level.add_argument("--as", dest="as_user", required=True, metavar="USER")
    level.add_argument("--note")
    level.set_defaults(handler=_cmd_level)

    gates = commands.add_parser("gates", help="the gate to a line's next rung, judged now; --set changes the plant's gates (admin)")
    gates.add_argument("--line", default="line-1")
    gates.add_argument("--json", action="store_true")
    gates.add_argument("--set", action="append", metavar="GATE.FIELD=VALUE", help="e.g. canary.min_pairs=300, rollback.max_disagreement=0.08")
    gates.add_argument("--as", dest="as_user", metavar="USER")
    gates.add_argument("--note")
    gates.set_defaults(handler=_cmd_gates)

    requests_parser = commands.add_parser("requests", help="requests waiting for a manager (moves into canary or full, model switches there)")
    requests_parser.add_argument("--line")
    requests_parser.add_argument("--all", action="store_true", help="decided requests too")
    requests_parser.add_argument("--json", action="store_true")
    requests_parser.set_defaults(handler=_cmd_requests)

    approve = commands.add_parser("approve", help="a manager approves (or --refuse) a request")
    approve.add_argument("request", type=_int(1))
    approve.add_argument("--refuse", action="store_true")
    approve.add_argument("--note", help="why (what you checked); required to approve or refuse, it goes into the audit log")
    approve.add_argument("--as", dest="as_user", required=True, metavar="USER")
    approve.set_defaults(handler=_cmd_approve)

    model = commands.add_parser("model", help="model versions: list, import, register, candidate, switch, rollback")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    model_list = model_commands.add_parser("list", help="registered versions and where they run")
    model_list.add_argument("--json", action="store_true")
    model_list.set_defaults(handler=_cmd_model)
    model_register = model_commands.add_parser("register", help="register a model version folder (hashes checked against its card)")
    model_register.add_argument("path")
    model_register.add_argument("--as", dest="as_user", required=True, metavar="USER")
    model_register.set_defaults(handler=_cmd_model)
    model_import = model_commands.add_parser("import", help="import a plant's Ultralytics detection .pt (or its ONNX export) as a new version")
    model_import.add_argument("path", help="best.pt or model.onnx")
    model_import.add_argument("--version", required=True, help="name of the new version")
    model_import.add_argument(
        "--camera", type=_parse_camera, metavar="WxH", help="the line camera's frame size or aspect (default 4:3): sets the ONNX input shape"
    )
    model_import.add_argument("--classes", help="class names, comma-separated, for an ONNX that does not carry them")
    model_import.add_argument("--models-dir", help="where to write the version (default: the models folder setting)")
    model_import.add_argument("--as", dest="as_user", required=True, metavar="USER")
    model_import.set_defaults(handler=_cmd_model)

    model_quantize = model_commands.add_parser(
        "quantize", help="make a static INT8 version of VERSION: its own card, drift reference, admission check and evaluation on every scenario"
    )
    model_quantize.add_argument("--version", required=True, help="the parent version (a folder under SHADOWLINE_MODELS_DIR, or a path)")
    model_quantize.add_argument("--to", required=True, help="the new version's name, e.g. scratch-v2-int8")
    model_quantize.add_argument("--models-dir", help="where to write it (default: SHADOWLINE_MODELS_DIR)")
    model_quantize.add_argument("--calibration", type=_int(1), default=120, help="validation images to calibrate on")
    model_quantize.add_argument("--method", choices=["MinMax", "Percentile", "Entropy"], default="MinMax")
    model_quantize.add_argument("--keep-fp32", choices=["decode", "head"], default="decode", help="decode: the head's decoding; head: the whole head")
    model_quantize.add_argument(
        "--int8-stem", action="store_true", help="quantise the first convolution too (by default it stays FP32: faster there on three channels)"
    )
    model_quantize.add_argument("--eval-count", type=_int(0), default=500, help="phones per scenario for the evaluation (0 skips it)")
    model_quantize.set_defaults(handler=_cmd_model_quantize)
    for name, help_text in (
        ("candidate", "run VERSION in shadow beside the active model (green); --version none removes it"),
        ("switch", "make the candidate active (a manager's approval in canary or full)"),
        ("rollback", "make the previous version active again, at once"),
    ):
        sub = model_commands.add_parser(name, help=help_text)
        sub.add_argument("--line", default="line-1")
        if name == "candidate":
            sub.add_argument("--version", required=True)
        if name == "switch":
            sub.add_argument("--to", help="the version to switch to (must be the candidate)")
        sub.add_argument("--as", dest="as_user", required=True, metavar="USER")
        sub.add_argument("--note")
        sub.set_defaults(handler=_cmd_model)

    drift = commands.add_parser("drift", help="judge a line's recent phones against its reference, metric by metric")
    drift.add_argument("--line", default="line-1")
    drift.add_argument("--json", action="store_true", help="one JSON object: per metric statistic, score, threshold, verdict")
    drift.add_argument("--window-phones", type=_int(1), help="look at the last N phones instead of the line's setting")
    drift.add_argument("--window-minutes", type=_positive, help="look only at phones of the last M minutes")
    drift.add_argument("--check", action="store_true", help="record the check and raise alarms as the worker does")
    drift.set_defaults(handler=_cmd_drift)

    drift_settings = commands.add_parser("drift-settings", help="show or change a line's drift settings and thresholds")
    drift_settings.add_argument("--line", default="line-1")
    drift_settings.add_argument("--set", action="append", metavar="KEY=VALUE", help="e.g. window_phones=300 or brightness.psi_severe=0.3 (repeatable)")
    drift_settings.add_argument("--as", dest="as_user", metavar="USER", help="act as this user (password from SHADOWLINE_PASSWORD or a prompt)")
    drift_settings.add_argument("--note")
    drift_settings.set_defaults(handler=_cmd_drift_settings)

    reference = commands.add_parser("reference", help="drift references: compute a model's, or accept a production period")
    reference_commands = reference.add_subparsers(dest="reference_command", required=True, metavar="ACTION")
    ref_compute = reference_commands.add_parser("compute", help="measure a model version's training/validation images into reference.json")
    ref_compute.add_argument("--model", help="model version folder or name under models/ (default: the shipped model)")
    ref_compute.add_argument("--dataset", help="measure it on this data set's images (name under DATA_DIR/datasets or a folder): the plant's own")
    ref_compute.set_defaults(handler=_cmd_reference_compute)
    ref_accept = reference_commands.add_parser("accept", help="make a period of the line's production its reference")
    ref_accept.add_argument("--line", default="line-1")
    ref_accept.add_argument("--since", required=True, type=_iso_time, help="start (ISO, UTC unless a zone is given)")
    ref_accept.add_argument("--until", required=True, type=_iso_time, help="end (ISO)")
    ref_accept.add_argument("--as", dest="as_user", required=True, metavar="USER")
    ref_accept.add_argument("--note")
    ref_accept.set_defaults(handler=_cmd_reference_accept)
    ref_reset = reference_commands.add_parser("reset", help="compare the line with its model's training/validation images again")
    ref_reset.add_argument("--line", default="line-1")
    ref_reset.add_argument("--as", dest="as_user", required=True, metavar="USER")
    ref_reset.add_argument("--note")
    ref_reset.set_defaults(handler=_cmd_reference_reset)

    alarms = commands.add_parser("alarms", help="drift alarms: list, acknowledge")
    alarm_commands = alarms.add_subparsers(dest="alarms_command", required=True, metavar="ACTION")
    alarms_list = alarm_commands.add_parser("list", help="open alarms (or --all)")
    alarms_list.add_argument("--line")
    alarms_list.add_argument("--all", action="store_true", help="closed alarms too")
    alarms_list.add_argument("--json", action="store_true")
    alarms_list.set_defaults(handler=_cmd_alarms_list)
    alarms_ack = alarm_commands.add_parser("ack", help="acknowledge an alarm (or with --incident, an incident and all its alarms) with a note")
    alarms_ack.add_argument("alarm", type=_int(1), help="the alarm's id, or the incident's with --incident")
    alarms_ack.add_argument("--incident", action="store_true", help="ALARM is an incident: acknowledge it once, its alarms with it")
    alarms_ack.add_argument("--note", required=True)
    alarms_ack.add_argument("--as", dest="as_user", required=True, metavar="USER")
    alarms_ack.set_defaults(handler=_cmd_alarms_ack)

    dataset = commands.add_parser("dataset", help="versioned YOLO data sets: exported from labelled phones, or imported from a plant's own")
    dataset_commands = dataset.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    export = dataset_commands.add_parser("export", help="write DATA_DIR/datasets/NAME: labelled phones + generated ones, data.yaml, manifest")
    export.add_argument("--name", required=True)
    export.add_argument("--line", help="only this line's labelled phones")
    export.add_argument("--val-share", type=_share, default=0.2)
    export.add_argument("--generated-train", type=_int(0), default=200)
    export.add_argument("--generated-val", type=_int(0), default=40)
    export.add_argument("--generated-seed", type=_int(0), default=5000)
    export.add_argument("--for-model", metavar="VERSION", help="label classes mapped to this version's (default: the line's active version's)")
    export.set_defaults(handler=_cmd_dataset_export)
    dataset_import = dataset_commands.add_parser(
        "import", help="check and store a plant's YOLO (data.yaml) or COCO (JSON + images) data set as DATA_DIR/datasets/NAME"
    )
    dataset_import.add_argument("path", help="folder with data.yaml, a data.yaml, a COCO JSON, or a folder with train/ and valid/ COCO folders")
    dataset_import.add_argument("--name", required=True)
    dataset_import.add_argument("--val-share", type=_share, default=0.2, help="share held out for validation when a COCO file has no splits")
    dataset_import.add_argument("--skip-bad", action="store_true", help="store the good images, list the problems in the manifest")
    dataset_import.set_defaults(handler=_cmd_dataset_import)

    job = commands.add_parser("job", help="background training jobs (started from the Models page)")
    job_commands = job.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    job_run = job_commands.add_parser("run", help="run a recorded training job in this process")
    job_run.add_argument("job", type=_int(1))
    job_run.add_argument("--eval-count", type=_int(1), default=200, help="phones per scenario in the evaluation")
    job_run.set_defaults(handler=_cmd_job_run)

    train = commands.add_parser("train", help="generate a data set and train a model version into models/")
    train.add_argument("--version", required=True, help="name of the new model version folder")
    train.add_argument("--epochs", type=_int(1), default=60)
    train.add_argument("--imgsz", type=_int(32, 4096), default=320)
    train.add_argument("--batch", type=_int(1), default=16)
    train.add_argument("--seed", type=_int(0), default=0)
    train.add_argument("--train-count", type=_int(1), default=500)
    train.add_argument("--val-count", type=_int(1), default=120)
    train.add_argument("--train-seed", type=_int(0), default=1000)
    train.add_argument("--val-seed", type=_int(0), default=2000)
    train.add_argument("--models-dir", help="where to write the version (default: the models folder setting)")
    train.add_argument("--init-from", help="start from the weights of this model version folder (checked against its card)")
    train.add_argument("--eval-count", type=_int(1), default=500, help="phones per scenario in the evaluation written to the card")
    train.add_argument("--skip-evaluation", action="store_true", help="do not evaluate on the scenarios after training")
    train.add_argument("--dataset", help="train on an exported data set (shadowline dataset export) instead of generating one")
    train.add_argument("--candidate-for", metavar="LINE", help="register the new version and run it in shadow on this line (needs --as)")
    train.add_argument("--as", dest="as_user", metavar="USER")
    train.set_defaults(handler=_cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # a wrong argument: one line, exit 2
    try:
        return int(args.handler(args))
    except CommandError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except TrainingUnavailableError as error:  # an edge install asked to train: say how to add it
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the environment (database, disk, settings), or a bug
        problem = environment_problem(error)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 1
        log_file = log_unexpected(error, argv if argv is not None else sys.argv[1:])
        first = (str(error).splitlines() or [""])[0][:200]
        print(f"error: unexpected {type(error).__name__}: {first} (the full traceback is in {log_file})", file=sys.stderr)
        return 1


def environment_problem(error: BaseException) -> str | None:
    """One line for a failure caused by the environment rather than a bug, or None for a bug.

    A bad database URL, a file that is not a database, a database that cannot be opened or is
    newer than this code, an unusable data folder, a full disk, a bad setting, a missing driver.
    """
    from alembic.util.exc import CommandError as AlembicError
    from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError

    from core.extras import is_training_import_error, training_hint
    from core.settings import SettingsError
    from db.migrate import SchemaError

    if isinstance(error, SettingsError | SchemaError):
        return str(error)
    if is_training_import_error(error):
        return training_hint(f"this command (it imports {getattr(error, 'name', 'torch')})")
    if isinstance(error, ArgumentError | NoSuchModuleError):
        return f"SHADOWLINE_DATABASE_URL is not a usable database URL: {_first_line(error)}"
    if isinstance(error, DBAPIError):
        return f"database {_safe_url()}: {_first_line(error.orig)}"
    if isinstance(error, SQLAlchemyError | AlembicError):
        return f"database {_safe_url()}: {_first_line(error)}"
    if isinstance(error, ModuleNotFoundError) and (error.name or "").startswith("psycopg"):
        return "the PostgreSQL driver is not installed: pip install 'shadowline[postgres]' (psycopg 3)"
    if isinstance(error, ModuleNotFoundError):
        return f"a Python package is missing: {error.name} (is SHADOWLINE_DATABASE_URL's driver installed?)"
    if isinstance(error, OSError) and error.errno is not None:
        import os

        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{os.strerror(error.errno).lower()}"
    return None


def _first_line(error: object) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _safe_url() -> str:
    try:
        from db.engine import safe_url

        return safe_url(get_settings().database_url)
    except Exception:  # only for the message
        return "(SHADOWLINE_DATABASE_URL)"


LOG_NAME = "shadowline.log"


def log_unexpected(error: BaseException, argv: list[str]) -> Path:
    """Append the full traceback of a bug to DATA_DIR/logs/shadowline.log (a temporary folder if that cannot be written)."""
    import traceback

    text = "".join(traceback.format_exception(error))
    entry = f"{datetime.now(UTC).isoformat()} shadowline {' '.join(argv)}\n{text}\n"
    candidates = []
    with contextlib.suppress(Exception):  # the settings themselves may be what failed
        candidates.append(get_settings().data_dir / "logs")
    candidates.append(Path(tempfile.gettempdir()) / "shadowline-logs")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with (folder / LOG_NAME).open("a", encoding="utf-8") as log:
                log.write(entry)
            return folder / LOG_NAME
        except OSError:
            continue
    return Path("(no writable log folder)")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmarks (never timed tests): ``shadowline bench detector`` and ``shadowline bench worker``.

Each compared path runs in its own fresh process (torch and onnxruntime never share one, so
their thread pools do not fight for the cores), on the same generated images, in alternating
rounds so that the machine's noise hits both alike. Results are medians over rounds, with
ratios.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np

BENCH_SEED = 424_242
#: The Ultralytics reference path; every other path is compared with it.
ULTRALYTICS_PATH = "ultralytics_pt_predict"


def int8_sibling(model_dir: Path) -> Path | None:
    """The INT8 version made from ``model_dir`` by ``model quantize`` (``<version>-int8`` beside it), if any."""
    candidate = Path(model_dir).parent / f"{Path(model_dir).name}-int8"
    return candidate if (candidate / "card.json").is_file() else None


def _render_images(count: int) -> list[np.ndarray]:
    from core.camera import get_scenario, render_run_phone

    scenario = get_scenario("normal")
    return [render_run_phone(scenario, BENCH_SEED, i).image for i in range(count)]


def _detector_round(model_dir: str, backend: str, count: int, threads: int) -> dict[str, Any]:
    """One round in a fresh process: per-image latency and throughput of one detector path."""
    if backend == "ultralytics":
        import torch

        torch.set_num_threads(threads)
    from core.detector.adapter import Detector

    detector = Detector(Path(model_dir), backend=backend, threads=threads)  # type: ignore[arg-type]
    images = _render_images(count)
    for image in images[:5]:  # warm-up
        detector.detect(image)
    latencies = []
    started = time.perf_counter()
    for image in images:
        t0 = time.perf_counter()
        detector.detect(image)
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    return {"backend": f"{detector.info.backend} {detector.version}", "latencies_ms": latencies, "images_per_s": count / elapsed}


def _in_fresh_process(function: Any, *args: Any) -> Any:
    # An executor, not ``multiprocessing.Pool``: a pool replaces a worker that dies and then waits for its
    # answer forever, where an executor raises ``BrokenProcessPool`` with the exit.
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def _summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = np.concatenate([r["latencies_ms"] for r in rounds])
    throughputs = [r["images_per_s"] for r in rounds]
    median_throughput = float(statistics.median(throughputs))
    return {
        "backend": rounds[0]["backend"],
        "median_ms": float(np.median(latencies)),
        "p99_ms": float(np.percentile(latencies, 99)),
        "images_per_s": median_throughput,
        "images_per_s_median": median_throughput,
        "images_per_s_rounds": [round(t, 2) for t in throughputs],
    }


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(), "load_average_1m": round(os.getloadavg()[0], 2)}


def detector_paths(model_dir: Path, int8_dir: Path | None) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """The compared paths ``name -> (model folder, backend)``, and the ones skipped with the reason."""
    from core.extras import training_available, training_hint

    paths: dict[str, tuple[str, str]] = {}
    skipped: dict[str, str] = {}
    if training_available():
        paths[ULTRALYTICS_PATH] = (str(model_dir), "ultralytics")
    else:
        skipped[ULTRALYTICS_PATH] = training_hint("Ultralytics' predict")
    paths["onnx_fp32"] = (str(model_dir), "onnx")
    if int8_dir is not None:
        paths["onnx_int8"] = (str(int8_dir), "onnx")
    else:
        name = Path(model_dir).name
        skipped["onnx_int8"] = f"no INT8 version beside {model_dir}: make one with `shadowline model quantize --version {name} --to {name}-int8`"
    return paths, skipped


def bench_detector(model_dir: Path, *, images: int = 100, rounds: int = 3, threads: int | None = None, int8_dir: Path | None = None) -> dict[str, Any]:
    """Ultralytics ``predict`` on the ``.pt``, the FP32 ONNX path and the INT8 version: same images, same threads.

    Each path runs each round in a fresh process; rounds alternate the paths. ``int8_dir``
    defaults to the ``<version>-int8`` folder beside ``model_dir`` when there is one.
    """
    threads = threads or os.cpu_count() or 1
    paths, skipped = detector_paths(model_dir, int8_dir or int8_sibling(model_dir))
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, (folder, backend) in paths.items():
            results[name].append(_in_fresh_process(_detector_round, folder, backend, images, threads))
    summary = {name: _summary(r) for name, r in results.items()}
    ratios: dict[str, float] = {}
    if ULTRALYTICS_PATH in summary:
        reference = summary[ULTRALYTICS_PATH]["images_per_s"]
        for name, entry in summary.items():
            if name != ULTRALYTICS_PATH:
                entry["ratio_vs_ultralytics"] = ratios[name] = round(entry["images_per_s"] / reference, 2)
    return {
        "benchmark": "detector",
        "model_dir": str(model_dir),
        "images_per_round": images,
        "rounds": rounds,
        "threads": threads,
        "machine": _machine(),
        "paths": summary,
        "skipped": skipped,
        "ratio_vs_ultralytics": ratios,
    }


def _worker_round(model_dir: str, count: int, threads: int, mode: str, profile: bool = False) -> dict[str, Any]:
    """One round in a fresh process: end-to-end worker (``mode='worker'``) or detector alone.

    With ``profile``, the measured worker run is profiled (cProfile) and the round also returns
    the time spent per stage (:data:`WORKER_STAGES`).
    """
    from core.detector.adapter import Detector
    from core.imaging import read_image
    from core.settings import load_settings

    with tempfile.TemporaryDirectory(prefix="shadowline-bench-") as tmp:
        settings = load_settings({"SHADOWLINE_DATA_DIR": tmp, "SHADOWLINE_MODELS_DIR": str(Path(model_dir).parent)})
        from core.ingest import store_image_bytes

        paths = []
        for image in _render_images(count):
            _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            paths.append(store_image_bytes(settings, "bench", encoded.tobytes(), ".jpg")[0])
        if mode == "detector":
            # As the worker runs it: `threads` phones at once, one detector thread each (core/worker.py).
            detector = Detector(Path(model_dir), threads=1)

            def detect(path: str) -> None:
                detector.detect(read_image(settings.image_file(path)))

            with ThreadPoolExecutor(max_workers=threads) as streams:
                list(streams.map(detect, paths[: 5 * threads]))
                started = time.perf_counter()
                list(streams.map(detect, paths))
                elapsed = time.perf_counter() - started
            return {"backend": f"detector {detector.version}", "latencies_ms": [elapsed / count * 1000], "images_per_s": count / elapsed}

        from core.worker import Worker
        from db.bootstrap import initialize, open_database
        from db.lines import list_lines, set_active_model
        from db.pipeline import queue_inspection
        from db.registry import register_model_version

        database = open_database(settings)
        initialize(database, settings)
        with database.write() as session:
            model = register_model_version(session=session, model_dir=Path(model_dir), actor="bench", models_dir=settings.models_dir)
            line = list_lines(session=session)[0]
            if line.active_model_id != model.id:
                set_active_model(session=session, line_id=line.id, model_id=model.id, actor="bench")
        worker = Worker(database, settings, threads=threads, freeze_after_load=True)
        # Warm-up: load the model and touch every code path once, on phones not measured.
        with database.write() as session:
            for path in paths[:5]:
                queue_inspection(session=session, line_id=line.id, serial="warmup", image_path=path, image_sha256=None, source="bench")
        worker.run(until_empty=True)
        with database.write() as session:
            for i, path in enumerate(paths):
                queue_inspection(session=session, line_id=line.id, serial=f"B{i:06d}", image_path=path, image_sha256=None, source="bench")
        profilers = _ThreadProfilers() if profile else None
        started = time.perf_counter()
        if profilers is not None:
            with profilers:
                worker.run(until_empty=True)
        else:
            worker.run(until_empty=True)
        elapsed = time.perf_counter() - started
        database.dispose()
        assert worker.stats.processed == count + 5, worker.stats
        result = {"backend": f"worker {model.version}", "latencies_ms": [elapsed / count * 1000], "images_per_s": count / elapsed}
        if profilers is not None:
            result["stages_s"] = _stage_times(profilers.stats(), elapsed)
        return result


class _ThreadProfilers:
    """cProfile in the calling thread and in every task the worker's thread pools run meanwhile.

    cProfile sees only the thread that enables it, and the worker decodes, inspects and writes in
    pools of threads (core/worker.py): each pool task gets the profiler of its thread.
    """

    def __init__(self) -> None:
        import cProfile

        self._make = cProfile.Profile
        self._profilers: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._original: Any = None

    def _profiler(self) -> Any:
        with self._lock:
            return self._profilers.setdefault(threading.get_ident(), self._make())

    def __enter__(self) -> _ThreadProfilers:
        from concurrent.futures import thread

        self._original = original = thread._WorkItem.run
        profilers = self

        def run(item: Any) -> None:
            profiler = profilers._profiler()
            profiler.enable()
            try:
                original(item)
            finally:
                profiler.disable()

        thread._WorkItem.run = run  # type: ignore[method-assign,assignment]
        self._profiler().enable()
        return self

    def __exit__(self, *_: object) -> None:
        from concurrent.futures import thread

        self._profiler().disable()
        thread._WorkItem.run = self._original  # type: ignore[method-assign]

    def stats(self) -> Any:
        import pstats

        first, *others = self._profilers.values()
        stats = pstats.Stats(first)
        for profiler in others:
            stats.add(profiler)
        return stats


#: Where a worker's time goes: stage -> (module file suffix, function name), cumulative time of each.
WORKER_STAGES: dict[str, tuple[str, str]] = {
    "claim (claim_batch, its transaction)": ("db/pipeline.py", "claim_batch"),
    "line settings and repeats (reads)": ("core/worker.py", "_read_lines"),
    "decode (read_image)": ("core/imaging.py", "read_image"),
    "input metrics": ("core/image_metrics.py", "compute_input_metrics"),
    "detector (ONNX, NMS)": ("core/detector/adapter.py", "detect"),
    "admission check": ("core/admission.py", "check"),
    "routing": ("core/routing.py", "route"),
    "write (requeue_stale + record_results)": ("core/worker.py", "_write_results"),
    "drift bookkeeping (note_written)": ("core/inspection.py", "note_written"),
    "drift checks": ("core/inspection.py", "run_due_drift_checks"),
    "heartbeats": ("core/worker.py", "beat"),
}


def _stage_times(stats: Any, elapsed: float) -> dict[str, float]:
    """Seconds per stage, summed over the worker's threads (so together more than the wall time)."""
    table: dict[str, float] = {}
    for stage, (suffix, function) in WORKER_STAGES.items():
        table[stage] = round(sum(row[3] for (file, _, name), row in stats.stats.items() if name == function and file.endswith(suffix)), 4)
    table["total (wall)"] = round(elapsed, 4)
    return table


def bench_worker(
    model_dir: Path, *, phones: int = 100, rounds: int = 3, threads: int | None = None, int8_dir: Path | None = None, profile: bool = False
) -> dict[str, Any]:
    """Phones per second through the whole worker (queued to decided, SQLite) against the detector alone, FP32 and INT8.

    Both run ``threads`` phones at once, one detector thread each, as the worker does.

    ``int8_dir`` defaults to the ``<version>-int8`` folder beside ``model_dir`` when there is one.
    With ``profile``, one more worker round per model runs under cProfile (not counted in the
    throughput) and the result says where its time went, stage by stage.
    """
    threads = threads or os.cpu_count() or 1
    models = {"fp32": model_dir}
    int8 = int8_dir or int8_sibling(model_dir)
    if int8 is not None:
        models["int8"] = int8
    results: dict[str, list[dict[str, Any]]] = {}
    for _ in range(rounds):
        for key, folder in models.items():
            for mode, name in (("detector", f"detector_only_{key}"), ("worker", f"worker_{key}")):
                results.setdefault(name, []).append(_in_fresh_process(_worker_round, str(folder), phones, threads, mode))
    summary = {name: _summary(r) for name, r in results.items()}
    shares = {key: round(summary[f"worker_{key}"]["images_per_s"] / summary[f"detector_only_{key}"]["images_per_s"], 3) for key in models}
    result: dict[str, Any] = {
        "benchmark": "worker",
        "model_dir": str(model_dir),
        "int8_dir": str(int8) if int8 else None,
        "phones_per_round": phones,
        "rounds": rounds,
        "threads": threads,
        "machine": _machine(),
        "paths": summary,
        "worker_share_of_detector_throughput": shares["fp32"],
        "worker_share_by_model": shares,
    }
    if profile:
        result["profile"] = {key: _in_fresh_process(_worker_round, str(folder), phones, threads, "worker", True)["stages_s"] for key, folder in models.items()}
    return result


def format_table(result: dict[str, Any]) -> str:
    """A plain-text table of a benchmark result."""
    lines = [f"{result['benchmark']} benchmark, {result['rounds']} rounds, {result['threads']} threads, {result['machine']}"]
    lines.append(f"{'path':<26}{'backend':<24}{'median ms':>10}{'p99 ms':>10}{'images/s':>10}")
    for name, s in result["paths"].items():
        lines.append(f"{name:<26}{s['backend']:<24}{s['median_ms']:>10.2f}{s['p99_ms']:>10.2f}{s['images_per_s_median']:>10.1f}")
    for name, reason in result.get("skipped", {}).items():
        lines.append(f"{name}: skipped: {reason}")
    for key in ("ratio_vs_ultralytics", "worker_share_by_model"):
        if result.get(key):
            lines.append(f"{key}: " + ", ".join(f"{name} {value}" for name, value in result[key].items()))
    for model, stages in result.get("profile", {}).items():
        lines.append(f"where a {model} worker's time goes (cProfile, seconds summed over its threads):")
        lines.extend(f"  {stage:<42}{seconds:>8.3f}" for stage, seconds in stages.items())
    return "\n".join(lines)


def bench_admission(model_dir: Path, *, phones: int = 2000, seed: int = 8080, scenario: str = "normal") -> dict[str, Any]:
    """The admission check on generated phones: the share sent to people, and phone recall with and without it.

    Normal phones should be refused at about the version's target rate (1 %); the model's phone
    recall is unchanged by the check (it only sends phones to people, who then judge them).
    """
    from core.admission import load_admitter
    from core.camera import get_scenario, render_run_phone
    from core.detector.adapter import Detector
    from core.evaluation import wilson_interval
    from core.image_metrics import compute_input_metrics

    detector = Detector(model_dir)
    admitter = load_admitter(detector)
    threshold = detector.info.decision_threshold
    chosen = get_scenario(scenario)
    refused: dict[str, int] = {}
    defective = caught = admitted_defective = admitted_caught = 0
    started = time.perf_counter()
    for index in range(phones):
        phone = render_run_phone(chosen, seed, index)
        detections = detector.detect(phone.image)
        answer = admitter.check(phone.image, compute_input_metrics(phone.image), detections.features)
        if not answer.admitted:
            refused[answer.check] = refused.get(answer.check, 0) + 1
        if phone.is_defective:
            defective += 1
            hit = detections.max_confidence >= threshold
            caught += hit
            if answer.admitted:
                admitted_defective += 1
                admitted_caught += hit
    total_refused = sum(refused.values())
    return {
        "model_version": detector.version,
        "scenario": scenario,
        "phones": phones,
        "seed": seed,
        "target_rate": admitter.target_rate,
        "refused": total_refused,
        "refused_rate": total_refused / phones,
        "refused_rate_ci95": wilson_interval(total_refused, phones),
        "refused_by_check": refused,
        "phone_recall": caught / defective if defective else None,
        "phone_recall_ci95": wilson_interval(caught, defective),
        "phone_recall_on_admitted": admitted_caught / admitted_defective if admitted_defective else None,
        "defective_phones": defective,
        "seconds": round(time.perf_counter() - started, 1),
    }


# -- the worker on SQLite and PostgreSQL, with several worker processes ------------------------


def _timed_database(engine: Any, counters: dict[str, float]) -> None:
    """Count statements, seconds spent in them, and the most connections held at once, on ``engine``."""
    from sqlalchemy import event

    @event.listens_for(engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info["bench_t0"] = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        counters["db_seconds"] += time.perf_counter() - conn.info.pop("bench_t0", time.perf_counter())
        counters["statements"] += 1

    @event.listens_for(engine, "checkout")
    def _checkout(*_: Any) -> None:
        counters["held"] += 1
        counters["peak_connections"] = max(counters["peak_connections"], counters["held"])

    @event.listens_for(engine, "checkin")
    def _checkin(*_: Any) -> None:
        counters["held"] -= 1


def _bench_worker_process(env: dict[str, str], threads: int, ready: Any, go: Any) -> dict[str, float]:
    """One worker process of a database round: warm up, wait for the start, run until the queue is empty."""
    from core.camera import get_scenario, render_run_phone
    from core.settings import load_settings
    from core.worker import Worker
    from db.bootstrap import open_database
    from db.lines import list_lines

    settings = load_settings(env)
    database = open_database(settings, migrate=False)
    worker = Worker(database, settings, threads=threads, freeze_after_load=True)
    with database.read() as session:
        line = list_lines(session=session)[0]
    worker.inspector.inspect_safely(render_run_phone(get_scenario("normal"), BENCH_SEED, 0).image, serial="warmup", line=line)  # load the model
    counters = {"db_seconds": 0.0, "statements": 0.0, "held": 0.0, "peak_connections": 0.0}
    _timed_database(database.engine, counters)
    ready.put(os.getpid())
    go.wait()
    started = time.perf_counter()
    worker.run(until_empty=True)
    counters["seconds"] = time.perf_counter() - started
    counters["processed"] = float(worker.stats.processed)
    database.dispose()
    return counters


def _database_round(model_dir: str, database_url: str | None, phones: int, workers: int, threads: int) -> dict[str, Any]:
    """One round: ``workers`` fresh worker processes drain ``phones`` queued phones from one database."""
    from core.ingest import store_image_bytes
    from core.settings import load_settings
    from db.bootstrap import initialize, open_database
    from db.lines import list_lines
    from db.pipeline import queue_inspection
    from db.registry import register_model_version

    with tempfile.TemporaryDirectory(prefix="shadowline-bench-") as tmp:
        env = {"SHADOWLINE_DATA_DIR": tmp, "SHADOWLINE_MODELS_DIR": str(Path(model_dir).parent)}
        if database_url:
            env["SHADOWLINE_DATABASE_URL"] = database_url
        settings = load_settings(env)
        database = open_database(settings, migrate=True)
        initialize(database, settings)
        with database.write() as session:
            register_model_version(session=session, model_dir=Path(model_dir), actor="bench", models_dir=settings.models_dir)
            line = list_lines(session=session)[0]
        paths = []
        for image in _render_images(phones):
            _, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
            paths.append(store_image_bytes(settings, "bench", encoded.tobytes(), ".jpg")[0])
        with database.write() as session:
            for i, path in enumerate(paths):
                queue_inspection(session=session, line_id=line.id, serial=f"B{i:06d}", image_path=path, image_sha256=None, source="bench")
        context = mp.get_context("spawn")
        manager = context.Manager()
        ready, go = manager.Queue(), manager.Event()
        with context.Pool(workers) as pool:
            pending = [pool.apply_async(_bench_worker_process, (env, threads, ready, go)) for _ in range(workers)]
            for _ in range(workers):
                ready.get(timeout=300)
            started = time.perf_counter()
            go.set()
            results = [p.get(timeout=3600) for p in pending]
            elapsed = time.perf_counter() - started
        manager.shutdown()
        from sqlalchemy import func, select

        from db.models import Inspection

        with database.read() as session:
            done = session.scalar(select(func.count()).select_from(Inspection).where(Inspection.status == "done"))
        database.dispose()
    processed = sum(r["processed"] for r in results)
    assert done == phones and processed == phones, (done, processed)
    return {
        "phones_per_s": phones / elapsed,
        "db_ms_per_phone": sum(r["db_seconds"] for r in results) / phones * 1000,
        "statements_per_phone": sum(r["statements"] for r in results) / phones,
        "peak_connections_per_worker": max(r["peak_connections"] for r in results),
    }


def bench_worker_databases(
    model_dir: Path, *, postgres_url: str | None = None, phones: int = 100, rounds: int = 3, workers: tuple[int, ...] = (1, 2)
) -> dict[str, Any]:
    """The worker end to end on SQLite beside PostgreSQL, with 1 and 2 worker processes (``--threads`` = cores / workers).

    ``postgres_url`` is a server where a throw-away database may be created per round (its
    ``postgres`` database as the admin connection); when None a throw-away server is started from
    Debian's binaries (:mod:`db.throwaway_postgres`) and removed afterwards.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    cores = os.cpu_count() or 1
    server = None
    if postgres_url is None:
        from db.throwaway_postgres import start_server

        server = start_server()
        postgres_url = server.url()
    admin = make_url(postgres_url)
    configs = [(backend, n) for n in workers for backend in ("sqlite", "postgres")]
    results: dict[str, list[dict[str, Any]]] = {f"{backend} x{n}": [] for backend, n in configs}
    try:
        for round_index in range(rounds):
            for backend, n in configs:
                url = None
                if backend == "postgres":
                    name = f"shadowline_bench_{os.getpid()}_{round_index}_{n}"
                    engine = create_engine(admin.set(database="postgres"), isolation_level="AUTOCOMMIT")
                    with engine.connect() as connection:
                        connection.execute(text(f'CREATE DATABASE "{name}"'))
                    engine.dispose()
                    url = admin.set(database=name).render_as_string(hide_password=False)
                # Run here: the round's worker processes are fresh ones of their own (a pool's process may not start children).
                results[f"{backend} x{n}"].append(_database_round(str(model_dir), url, phones, n, max(1, cores // n)))
    finally:
        if server is not None:
            from db.throwaway_postgres import remove

            remove(server)
    summary = {}
    for key, rows in results.items():
        summary[key] = {
            "phones_per_s_median": statistics.median(r["phones_per_s"] for r in rows),
            "db_ms_per_phone_median": statistics.median(r["db_ms_per_phone"] for r in rows),
            "statements_per_phone": statistics.median(r["statements_per_phone"] for r in rows),
            "peak_connections_per_worker": max(r["peak_connections_per_worker"] for r in rows),
        }
    return {
        "benchmark": "worker-databases",
        "model_dir": str(model_dir),
        "phones_per_round": phones,
        "rounds": rounds,
        "cores": cores,
        "machine": _machine(),
        "paths": summary,
    }


def format_database_table(result: dict[str, Any]) -> str:
    head = f"worker on each database, {result['phones_per_round']} phones, {result['rounds']} rounds, threads = {result['cores']} cores / workers"
    lines = [f"{head}, {result['machine']}"]
    lines.append(f"{'database x workers':<20}{'phones/s':>10}{'db ms/phone':>13}{'statements/phone':>18}{'connections/worker':>21}")
    for name, s in result["paths"].items():
        lines.append(
            f"{name:<20}{s['phones_per_s_median']:>10.1f}{s['db_ms_per_phone_median']:>13.2f}{s['statements_per_phone']:>18.1f}{s['peak_connections_per_worker']:>21.0f}"
        )
    return "\n".join(lines)

"""``shadowline serve``: the inspection service on uvicorn, next to the worker on the edge box."""

from __future__ import annotations

import logging
import os
import signal
import threading

from core.settings import Settings, get_settings

log = logging.getLogger("shadowline.server")

#: Seconds between background drift checks of the phones this service wrote (checks run only when due;
#: the worker checks the phones it wrote itself, see core.server.service's docstring).
DRIFT_CHECK_SECONDS = 5.0


def build_service(settings: Settings | None = None, *, threads: int = 0, detector_threads: int = 0):  # noqa: ANN201 - InspectionService, imported lazily
    """The service over the installation of ``settings``, its models loading in the background.

    By default one phone per core at once, onnxruntime on one thread each. Measured with ``shadowline
    bench line`` on 2 cores (see the README): 2 phones at once with one detector thread each sustained
    about 30 phones/s with no fail-safe, where 4 phones at once on onnxruntime's default threads (2
    each, 8 threads on 2 cores) gave fail-safes from about 23 phones/s; one inference lane (a lock, 2
    detector threads) did worse still, because the decoding, database work and HTTP of the other
    phones then wait for the cores too.

    Args:
        threads: Phones inspected at once (0: one per core).
        detector_threads: onnxruntime threads per phone (0: the cores shared among ``threads``, at least 1).
    """
    cores = os.cpu_count() or 1
    threads = threads or cores
    detector_threads = detector_threads or max(1, cores // threads)
    from core.inspection import Inspector
    from core.server.service import InspectionService
    from db.bootstrap import open_database

    settings = settings or get_settings()
    database = open_database(settings, wait_s=settings.schema_wait_s)  # PostgreSQL: wait for `shadowline migrate`, never migrate here
    inspector = Inspector(database, settings, threads=detector_threads, admission_target_rate=settings.admission_target_rate)
    service = InspectionService(database, settings, inspector, threads=threads)
    service.start_loading()
    return service


def _drift_loop(service, stop: threading.Event) -> None:  # noqa: ANN001
    """The heartbeat (the app shows whether the line's server answers) and the due drift checks, every few seconds."""
    from db.engine import is_transient

    while not stop.wait(DRIFT_CHECK_SECONDS):
        try:
            service.beat()
            service.background_checks()
        except Exception as error:  # the database restarting must not end the service's checks
            if not is_transient(error):
                raise
            logging.getLogger("shadowline.server").warning("drift checks skipped, the database is unavailable: %s", str(error).splitlines()[0])


def serve(*, address: str = "127.0.0.1", port: int = 8600, threads: int = 0, detector_threads: int = 0) -> int:
    """Run the service until interrupted."""
    import uvicorn

    from core.server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    service = build_service(threads=threads, detector_threads=detector_threads)
    stop = threading.Event()
    _beat_quietly(service)
    threading.Thread(target=_drift_loop, args=(service, stop), name="drift-checks", daemon=True).start()
    print(f"Shadowline inspection service on http://{address}:{port} (docs: /docs, metrics: /metrics)", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: with the default
    # handler that would kill the process before the phones in flight are written and the heartbeat
    # says "stopped". This handler turns it into a normal exit through the `finally` below.
    signal.signal(signal.SIGTERM, _exit_normally)
    try:
        uvicorn.run(create_app(service), host=address, port=port, log_level="warning", access_log=False)
    finally:
        stop.set()
        service.close()
        _beat_quietly(service, state="stopped")
    return 0


def _exit_normally(signum: int, frame: object) -> None:
    raise SystemExit(0)


def _beat_quietly(service, state: str = "running") -> None:  # noqa: ANN001
    """A heartbeat that cannot be written (the database away) is skipped: the loop beats again."""
    try:
        service.beat(state=state)
    except Exception as error:
        log.warning("heartbeat not written: %s", str(error).splitlines()[0])

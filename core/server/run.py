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


def build_service(settings: Settings | None = None, *, threads: int = 0, detector_threads: int = 0, freeze_after_load: bool = False):  # noqa: ANN201 - InspectionService, imported lazily
    """The service over the installation of ``settings``, its models loading in the background.

    By default one phone per core at once, each inference on every core, with onnxruntime's idle
    threads sleeping instead of spinning. Measured on 2 cores (20 s per setting, the same client):

    ===========================================  ==========================  =========================
    phones at once x detector threads            10 phones/s: p50 / p99      CPU of the service/phone
    ===========================================  ==========================  =========================
    2 x 1                                        43 / 57 ms                  41 ms
    2 x 2, spinning (onnxruntime's default)      39 / 62 ms                  92 ms
    2 x 2, no spinning (the default here)        34 / 45 ms                  36 ms
    ===========================================  ==========================  =========================

    A lone phone gets both cores (the line's usual case, a phone every few hundred ms); under load
    the two inferences share them without spinning away the time the other needs. Both 2 x 1 and
    2 x 2 without spinning answered 36 phones/s for 20 s without a fail-safe. Earlier: 4 phones at
    once on onnxruntime's default threads gave fail-safes from about 23 phones/s, and one inference
    lane (a lock) did worse still, because the decoding, database work and HTTP of the other phones
    then waited for the cores too.

    Args:
        threads: Phones inspected at once (0: one per core).
        detector_threads: onnxruntime threads per phone (0: one per core).
        freeze_after_load: See :class:`core.server.service.InspectionService` (``serve`` sets it).
    """
    cores = os.cpu_count() or 1
    threads = threads or cores
    detector_threads = detector_threads or cores
    from core.inspection import Inspector
    from core.server.service import InspectionService
    from db.bootstrap import open_database

    settings = settings or get_settings()
    database = open_database(settings, wait_s=settings.schema_wait_s)  # PostgreSQL: wait for `shadowline migrate`, never migrate here
    inspector = Inspector(
        database,
        settings,
        threads=detector_threads,
        spin=threads == 1,
        narrow_when_busy=threads > 1 and detector_threads > 1,
        admission_target_rate=settings.admission_target_rate,
    )
    service = InspectionService(database, settings, inspector, threads=threads, freeze_after_load=freeze_after_load)
    service.start_loading()
    return service


def _drift_loop(service, stop: threading.Event) -> None:  # noqa: ANN001
    """The heartbeat (the app shows whether the line's server answers), refused posts and the due drift checks, every few seconds."""
    from db.engine import is_transient

    while not stop.wait(DRIFT_CHECK_SECONDS):
        try:
            service.beat()
            service.write_refused_posts()
            service.background_checks()
        except Exception as error:  # the database restarting must not end the service's checks
            if not is_transient(error):
                raise
            logging.getLogger("shadowline.server").warning("drift checks skipped, the database is unavailable: %s", str(error).splitlines()[0])


#: How long a stopping service waits for the requests still open (long-polls above all) before closing them.
SHUTDOWN_GRACE_SECONDS = 3


def serve(*, address: str = "127.0.0.1", port: int = 8600, threads: int = 0, detector_threads: int = 0) -> int:
    """Run the service until interrupted."""
    import uvicorn

    from core.server.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    service = build_service(threads=threads, detector_threads=detector_threads, freeze_after_load=True)
    stop = threading.Event()
    _beat_quietly(service)
    threading.Thread(target=_drift_loop, args=(service, stop), name="drift-checks", daemon=True).start()
    print(f"Shadowline inspection service on http://{address}:{port} (docs: /docs, metrics: /metrics)", flush=True)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: with the default
    # handler that would kill the process before the phones in flight are written and the heartbeat
    # says "stopped". This handler turns it into a normal exit through the `finally` below.
    signal.signal(signal.SIGTERM, _exit_normally)
    try:
        # A hold station's long-poll waits up to 20 s for news: on shutdown it answers at once (with what it
        # has, and its cursor), and anything still open is cut after SHUTDOWN_GRACE_SECONDS.
        server = uvicorn.Server(
            uvicorn.Config(
                create_app(service), host=address, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS
            )
        )
        service.is_stopping = lambda: bool(server.should_exit)  # long-polls answer at once instead of holding the shutdown
        server.run()
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

"""``shadowline bench line``: the inspection service under a real HTTP client at fixed arrival rates.

Open loop: phone ``i`` is sent at ``start + i / rate`` whatever the earlier answers, by a pool of
client threads, so a slow service shows as latency rather than as a slower client. Capture to
answer is measured from that scheduled moment to the answer's arrival. The service runs as its
own process (``shadowline serve``) on a fresh installation; the same images go through the
detector alone in a fresh process, for its latency and throughput.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import httpx
import numpy as np

from core.bench import _detector_round, _in_fresh_process, _machine, _render_images


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)), "max_ms": float(max(values))}


def _upkeep_totals(url: str) -> tuple[float, float]:
    """Seconds spent in the upkeep after writes, and the phones it covered, so far (from /metrics; 0 when absent)."""
    totals = {"shadowline_upkeep_seconds_sum": 0.0, "shadowline_upkeep_phones_total": 0.0}
    try:
        text = httpx.get(f"{url}/metrics", timeout=30).text
    except httpx.HTTPError:
        return 0.0, 0.0
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in totals:
            totals[name] = float(value)
    return totals["shadowline_upkeep_seconds_sum"], totals["shadowline_upkeep_phones_total"]


def _detector_paced_round(model_dir: str, count: int, threads: int, rates: list[float]) -> dict[float, list[float]]:
    """In a fresh process: the detector set up as the service sets it up (every core, idle threads
    sleeping), given one image every ``1 / rate`` s, as phones arrive at a line; per rate, each
    image's time. Against the back-to-back round it shows what the pauses alone cost the detector
    (on this machine a sleeping core wakes slowly), so the service's own share can be told apart."""
    from core.detector.adapter import Detector

    detector = Detector(Path(model_dir), threads=threads, spin=False)
    images = _render_images(count)
    for image in images[:5]:  # warm-up
        detector.detect(image)
    found: dict[float, list[float]] = {}
    for rate in rates:
        latencies = []
        due = time.perf_counter()
        for image in images:
            due += 1 / rate
            time.sleep(max(0.0, due - time.perf_counter()))
            started = time.perf_counter()
            detector.detect(image)
            latencies.append((time.perf_counter() - started) * 1000)
        found[rate] = latencies
    return found


def _unique(jpeg: bytes, tag: str) -> bytes:
    """The same picture with a JPEG comment naming the phone: decoded alike, but no longer byte for byte an
    earlier phone's image (which the admission check refuses as a frozen camera's repeat)."""
    comment = tag.encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def _multipart(serial: str, jpeg: bytes, boundary: str) -> bytes:
    """A station's post, encoded: the form with ``serial`` and ``image`` (what ``httpx`` would send)."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="serial"\r\n\r\n{serial}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="phone.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
    )
    return head.encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()


def _run_rate(url: str, key: str, images: list[bytes], rate: float, seconds: float, run: str) -> dict[str, Any]:
    count = max(1, int(rate * seconds))
    upkeep_before = _upkeep_totals(url)
    latencies: list[float] = []
    failsafes: dict[str, int] = {}
    errors = 0
    # Every request is encoded before the clock starts and sent over a kept-alive connection per client
    # thread with the standard library's client: on a line the camera station is a machine of its own,
    # and here every millisecond of the client's CPU is taken from the service's two cores (httpx's
    # encoding and parsing added about 4 ms to the median at 10 phones/s).
    boundary = uuid.uuid4().hex
    bodies = [_multipart(f"{run}-{i:06d}", _unique(images[i % len(images)], f"{run}-{i}"), boundary) for i in range(count)]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    address = urlsplit(url)
    local = threading.local()

    def send(i: int, due: float) -> None:
        nonlocal errors
        time.sleep(max(0.0, due - time.perf_counter()))
        try:
            for attempt in range(2):
                reused = getattr(local, "connection", None)
                connection = reused or http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=30)
                local.connection = connection
                try:
                    connection.request("POST", "/v1/lines/line-1/inspections", body=bodies[i], headers=headers)
                    response = connection.getresponse()
                    body = response.read()
                    break
                except (ConnectionError, http.client.RemoteDisconnected):
                    # The server closed a kept-alive connection while it was idle (uvicorn after 5 s): once more on a
                    # new one, as HTTP clients do. A post sent twice is the same phone (its serial).
                    connection.close()
                    local.connection = None
                    if reused is None or attempt:
                        raise
            answered = time.perf_counter()
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}: {body[:200]!r}")
            answer = json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            errors += 1
            local.connection = None
            return
        latencies.append((answered - due) * 1000)
        if answer["failsafe"]:
            failsafes[answer["failsafe"]] = failsafes.get(answer["failsafe"], 0) + 1

    start = time.perf_counter() + 0.2
    with ThreadPoolExecutor(max_workers=48) as pool:
        futures = [pool.submit(send, i, start + i / rate) for i in range(count)]
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - start
    time.sleep(1.0)  # the upkeep of the last phones, which runs after their answers
    upkeep_after = _upkeep_totals(url)
    upkeep_phones = upkeep_after[1] - upkeep_before[1]
    return {
        "rate": rate,
        "phones": count,
        "seconds": round(elapsed, 1),
        **_percentiles(latencies),
        "failsafes": sum(failsafes.values()),
        "failsafe_reasons": failsafes,
        "errors": errors,
        "answered_per_s": round(len(latencies) / elapsed, 2),
        # The upkeep after each write (alarm checks, step-downs, drift counts): after the answer, so not in the latency above.
        "upkeep_ms_per_phone": round((upkeep_after[0] - upkeep_before[0]) * 1000 / upkeep_phones, 2) if upkeep_phones else None,
    }


def bench_line(
    model_dir: Path, *, rates: list[float], seconds: float = 60.0, images: int = 100, max_search: bool = True, detector_threads: int = 0
) -> dict[str, Any]:
    """Post generated phones at each rate for ``seconds``; compare with the detector alone on the same images.

    ``detector_threads``: onnxruntime threads per phone in the service (``serve --detector-threads``; 0: its
    default, every core); the paced detector alone runs with as many. The back-to-back reference always has every core.
    """
    rendered = _render_images(images)
    encoded = [cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])[1].tobytes() for image in rendered]
    detector = _in_fresh_process(_detector_round, str(model_dir), "auto", images, os.cpu_count() or 1)
    detector_summary = {**_percentiles(detector["latencies_ms"]), "images_per_s": round(detector["images_per_s"], 2), "backend": detector["backend"]}
    paced = _in_fresh_process(_detector_paced_round, str(model_dir), images, detector_threads or os.cpu_count() or 1, rates)
    with tempfile.TemporaryDirectory(prefix="shadowline-bench-line-") as tmp:
        env = dict(os.environ, SHADOWLINE_DATA_DIR=tmp, SHADOWLINE_MODELS_DIR=str(model_dir.parent))
        env.pop("SHADOWLINE_DATABASE_URL", None)
        subprocess.run([sys.executable, "-m", "core.cli", "init"], env=env, check=True, capture_output=True, timeout=300)
        key = subprocess.run(
            [sys.executable, "-m", "core.cli", "keys", "add", "--line", "line-1", "--name", "bench"],
            env=env,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout.strip()
        port = _free_port()
        log_path = Path(tmp) / "serve.log"
        log = log_path.open("wb")
        command = [sys.executable, "-m", "core.cli", "serve", "--port", str(port)] + (["--detector-threads", str(detector_threads)] if detector_threads else [])
        server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"the service never became ready (exit {server.poll()}); its log ends:\n{tail}")
                time.sleep(0.5)
            _run_rate(url, key, encoded, 5, 2, "warmup")
            runs = [_run_rate(url, key, encoded, rate, seconds, f"r{rate:g}") for rate in rates]
            sustained = None
            if max_search:
                # The highest rate answered in full, without a fail-safe: stepping up in shares of the detector's
                # own throughput until one fails. Upwards, because minutes of overload leave tens of thousands
                # of phones for people in the database, which slows every later rate (a search downwards from
                # the detector's throughput found no sustained rate at all, even at 21 phones/s).
                for share in (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 1.0):
                    rate = round(detector["images_per_s"] * share, 1)
                    result = _run_rate(url, key, encoded, rate, seconds, f"max{rate:g}")
                    runs.append(result)
                    if result["failsafes"] or result["errors"] or result["answered_per_s"] < 0.97 * rate:
                        break
                    sustained = rate
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
            log.close()
    return {
        "benchmark": "line",
        "seconds_per_rate": seconds,
        "detector_threads_per_phone": detector_threads or os.cpu_count() or 1,
        "machine": _machine(),
        "load_average": os.getloadavg(),
        "detector_only": detector_summary,
        "detector_paced": {f"{rate:g}": _percentiles(latencies) for rate, latencies in paced.items()},
        "runs": runs,
        "sustained_rate": sustained,
        "sustained_share_of_detector": round(sustained / detector["images_per_s"], 3) if sustained else None,
    }


def format_line(result: dict[str, Any]) -> str:
    d = result["detector_only"]
    lines = [
        f"line benchmark, {result['seconds_per_rate']:g} s per rate, {result.get('detector_threads_per_phone', '?')} detector threads per phone in the service,"
        f" {result['machine']}, load {', '.join(f'{x:.2f}' for x in result['load_average'])}",
        f"detector alone ({d['backend']}): p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, max {d['max_ms']:.1f} ms, {d['images_per_s']:.1f} images/s",
        f"{'phones/s':>9}{'phones':>8}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'fail-safes':>12}{'errors':>8}{'answered/s':>12}{'upkeep ms/phone':>17}",
    ]
    for r in result["runs"]:
        upkeep = "-" if r.get("upkeep_ms_per_phone") is None else f"{r['upkeep_ms_per_phone']:.1f}"
        lines.append(
            f"{r['rate']:>9g}{r['phones']:>8}{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['max_ms']:>9.1f}{r['failsafes']:>12}{r['errors']:>8}"
            f"{r['answered_per_s']:>12.2f}{upkeep:>17}"
        )
    for r in result["runs"]:
        if r["failsafes"]:
            reasons = ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in sorted(r["failsafe_reasons"].items(), key=lambda item: -item[1]))
            lines.append(f"fail-safes at {r['rate']:g} phones/s: {reasons}")
    for rate, p in result.get("detector_paced", {}).items():
        lines.append(f"detector alone, one image every 1/{rate} s, set up as the service sets it up: p50 {p['p50_ms']:.1f} ms, p99 {p['p99_ms']:.1f} ms")
    lines.append("upkeep: the after-write steps (alarm checks, step-downs, drift counts), run after the answer: not in the latency")
    lines.append(f"sustained: {result['sustained_rate']} phones/s = {result['sustained_share_of_detector']} of the detector's throughput")
    return "\n".join(lines)

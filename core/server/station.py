"""A simulated camera station and reject gate that use the inspection service as a plant would.

The station photographs each phone (the synthetic camera), posts it to ``POST /v1/lines/{line}/
inspections`` with its key, and hands the answer to :class:`SimulatedGate`, which passes, rejects
or diverts the phone to a person and logs what it did. It is what ``shadowline up`` runs, so the
demo shows the path a plant uses. The simulated inspector answers the diverted phones (as the
``simulate`` command does), knowing the generator's truth, which the station records beside the
phone because no real camera could send it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import cv2
import httpx

from core.camera import Scenario, render_run_phone

log = logging.getLogger("shadowline.station")


@dataclass
class SimulatedGate:
    """The reject gate at the end of the line: does what the answer says and remembers it."""

    actions: Counter[str] = field(default_factory=Counter)
    failsafes: int = 0

    def act(self, serial: str, answer: dict[str, object]) -> str:
        action = str(answer["action"])
        self.actions[action] += 1
        self.failsafes += answer.get("failsafe") is not None
        what = {"pass": "passed on", "reject": "pushed into the reject bin", "to_person": "diverted to the hold station"}[action]
        note = f" (fail-safe: {answer['failsafe']})" if answer.get("failsafe") else ""
        who = "by the model" if answer["decided_by"] == "model" else "for a person to judge"
        log.info("gate: %s %s %s, %s, %.0f ms%s", serial, what, who, answer["rule"], answer["latency_ms"], note)
        return action


def encode_phone(scenario: Scenario, seed: int, index: int) -> tuple[bytes, dict[str, object]]:
    """A simulated phone as the camera sends it (JPEG) and its generator truth."""
    phone = render_run_phone(scenario, seed, index)
    ok, encoded = cv2.imencode(".jpg", phone.image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    truth = {
        "defective": phone.is_defective,
        "defects": [{"class_name": d.kind.value, "box": list(d.box)} for d in phone.defects],
        "colour": phone.colour,
        "drift": scenario.drift_at(index),
    }
    return encoded.tobytes(), truth


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def post_phone(client: httpx.Client, *, line: str, key: str, serial: str, image: bytes, station: str, timeout: float = 10.0) -> dict[str, object]:
    """Post one phone; retries once on a connection error (the service answers a retry with the same inspection)."""
    for attempt in (1, 2):
        try:
            response = client.post(
                f"/v1/lines/{line}/inspections",
                headers={"Authorization": f"Bearer {key}"},
                files={"image": (f"{serial}.jpg", image, "image/jpeg")},
                data={"serial": serial, "station": station, "captured_at": datetime.now(UTC).isoformat()},
                timeout=timeout,
            )
            response.raise_for_status()
            return dict(response.json())
        except httpx.TransportError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def run_station(
    url: str,
    *,
    key: str,
    line: str,
    scenario: Scenario,
    rate: float,
    count: int | None,
    seed: int,
    station: str = "camera-1",
    on_answer: Callable[[str, dict[str, object], dict[str, object]], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> SimulatedGate:
    """Feed phones at ``rate`` per second (``count`` of them, or until stopped) through the service."""
    gate = SimulatedGate()
    started = time.monotonic()
    index = 0
    with httpx.Client(base_url=url) as client:
        while (count is None or index < count) and not should_stop():
            due = started + index / rate
            time.sleep(max(0.0, due - time.monotonic()))
            image, truth = encode_phone(scenario, seed, index)
            serial = f"SN-{seed}-{index:06d}"
            try:
                answer = post_phone(client, line=line, key=key, serial=serial, image=image, station=station)
            except httpx.HTTPError as error:
                # No answer, or a refusal (nothing recorded): the gate's own fail-safe (the service's default) diverts the phone.
                why = f"no answer from the service ({error})"
                if isinstance(error, httpx.HTTPStatusError):
                    why = f"the service refused it ({error.response.status_code}: {_error_message(error.response)})"
                log.error("gate: %s diverted to the hold station: %s", serial, why)
                gate.actions["to_person"] += 1
                gate.failsafes += 1
                index += 1
                continue
            gate.act(serial, answer)
            if on_answer:
                on_answer(serial, answer, truth)
            index += 1
    return gate

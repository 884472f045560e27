"""Shared drawing helpers: images with the model's boxes, times in the plant's zone."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import streamlit as st

from core.imaging import InvalidImageError, read_image

BOX_COLOURS = {"scratch": (0, 0, 255), "dent": (0, 165, 255), "chip": (255, 0, 255)}


@st.cache_data(ttl=300, max_entries=256, show_spinner=False)
def annotated_image(path: str, boxes: tuple[tuple[Any, ...], ...]) -> np.ndarray | None:
    """The stored image as RGB with ``(x1, y1, x2, y2, confidence, class_name)`` boxes drawn; None if unreadable."""
    try:
        image = read_image(Path(path))
    except InvalidImageError:
        return None
    thickness = max(2, image.shape[1] // 300)
    for x1, y1, x2, y2, confidence, name in boxes:
        colour = BOX_COLOURS.get(name, (0, 255, 255))
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        cv2.putText(image, f"{name} {confidence:.2f}", (int(x1), max(12, int(y1) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return np.ascontiguousarray(image[..., ::-1])


LABEL_COLOURS = ((255, 160, 0), (0, 140, 255))  # BGR: the first label blue, the second orange


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def two_labels_image(path: str, first: tuple[tuple[Any, ...], ...], second: tuple[tuple[Any, ...], ...]) -> np.ndarray | None:
    """The stored image as RGB with two labels' ``(x1, y1, x2, y2, class_name)`` boxes, numbered from 1; None if unreadable."""
    try:
        image = read_image(Path(path))
    except InvalidImageError:
        return None
    thickness = max(2, image.shape[1] // 300)
    for boxes, colour, below in ((first, LABEL_COLOURS[0], False), (second, LABEL_COLOURS[1], True)):
        for number, (x1, y1, x2, y2, name) in enumerate(boxes, start=1):
            cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
            y = min(image.shape[0] - 4, int(y2) + 14) if below else max(12, int(y1) - 4)
            cv2.putText(image, f"{number} {name}", (int(x1), y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
    return np.ascontiguousarray(image[..., ::-1])


def box_tuples(boxes: list[dict[str, Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple((b["x1"], b["y1"], b["x2"], b["y2"], b["confidence"], b["class_name"]) for b in boxes)


def local_time(moment: datetime, timezone: str, fmt: str = "%H:%M:%S") -> str:
    """``moment`` in the plant's time zone."""
    return moment.astimezone(ZoneInfo(timezone)).strftime(fmt)


#: Who is told about the system's own health (latency, queue, failures): the people who can act on it.
SYSTEM_HEALTH_ROLES = frozenset({"engineer", "admin"})


def alarm_banner(database: Any, role: str) -> None:
    """Unacknowledged incidents of every line, one line per cause, at the top of every page.

    Drift is for everyone on the floor; the system's own health only for engineers and admins.
    """
    from db.drift import Scope, current_incidents

    scopes = (Scope.DRIFT, Scope.SYSTEM) if role in SYSTEM_HEALTH_ROLES else (Scope.DRIFT,)
    with database.read() as session:
        incidents = current_incidents(session=session, unacknowledged_only=True, scopes=scopes)
    heading = {Scope.DRIFT.value: "Drift alarm", Scope.SYSTEM.value: "System health"}
    who = {
        Scope.DRIFT.value: "An engineer or manager acknowledges it on the Drift page.",
        Scope.SYSTEM.value: "Acknowledge it on the Drift page once someone is on it.",
    }
    for incident in incidents[:3]:
        text = f"**{heading[incident.scope]}** · **{incident.line}**: {incident.text.removeprefix(incident.line + ': ')}. {who[incident.scope]}"
        (st.error if incident.severity == "severe" else st.warning)(text, icon=":material/warning:")
    if len(incidents) > 3:
        st.caption(f"…and {len(incidents) - 3} more incidents: see the Drift page.")


def severe_drift_notice(database: Any, line_id: int) -> None:
    """Say so when the line is still in severe drift, acknowledged or not (the Live line and Automation pages)."""
    from db.drift import severe_drift

    with database.read() as session:
        incident = severe_drift(session=session, line_id=line_id)
    if incident is None:
        return
    seen = f" Acknowledged by {incident.acknowledged_by}: {incident.acknowledgement_note}." if incident.acknowledged else " Not acknowledged yet."
    st.error(
        f"**Severe drift** · {incident.text}. The drift goes on: people judge the phones the model would have decided, "
        f"and moving up waits until it is over.{seen}",
        icon=":material/warning:",
    )

"""Shared drawing helpers: images with the model's boxes, times in the plant's zone."""

from __future__ import annotations

import zlib
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import streamlit as st

from core.imaging import InvalidImageError, read_image

#: BGR colours for boxes; a class keeps its colour on every page (chosen from its name, not from code).
BOX_PALETTE = ((0, 0, 255), (0, 165, 255), (255, 0, 255), (0, 200, 0), (255, 128, 0), (0, 255, 255), (128, 0, 255), (255, 255, 0), (0, 128, 255), (128, 255, 0))


def class_colour(name: str) -> tuple[int, int, int]:
    """The BGR colour of a defect class: the same for a name everywhere, whatever version names it."""
    return BOX_PALETTE[zlib.crc32(str(name).encode()) % len(BOX_PALETTE)]


@st.cache_data(ttl=300, max_entries=256, show_spinner=False)
def annotated_image(path: str, boxes: tuple[tuple[Any, ...], ...]) -> np.ndarray | None:
    """The stored image as RGB with ``(x1, y1, x2, y2, confidence, class_name)`` boxes drawn; None if unreadable."""
    try:
        image = read_image(Path(path))
    except InvalidImageError:
        return None
    thickness = max(2, image.shape[1] // 300)
    scale = max(0.45, image.shape[1] / 1400)  # labels readable on a 2448 px frame shown small
    for x1, y1, x2, y2, confidence, name in boxes:
        colour = class_colour(name)
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), colour, thickness)
        cv2.putText(
            image,
            f"{name} {confidence:.2f}",
            (int(x1), max(int(12 * scale / 0.45), int(y1) - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            colour,
            thickness // 2,
            cv2.LINE_AA,
        )
    return np.ascontiguousarray(image[..., ::-1])


#: Live line thumbnails are drawn at this many times the camera's size, so a box label stays legible in a grid.
THUMBNAIL_SCALE = 2


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def labelled_thumbnail(path: str, boxes: tuple[tuple[Any, ...], ...]) -> bytes | None:
    """The stored image, enlarged, with each box and a label (class, confidence) on a dark band, as JPEG; None if unreadable.

    Drawn for a thumbnail about a third of the page wide: the label reads at about 12 px on a 1440 px screen.
    Cached as encoded bytes, so a page that refreshes every few seconds does not encode its images again.
    """
    try:
        image = read_image(Path(path))
    except InvalidImageError:
        return None
    scale = THUMBNAIL_SCALE
    image = cv2.resize(image, (image.shape[1] * scale, image.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
    font, font_scale, weight = cv2.FONT_HERSHEY_SIMPLEX, 0.0016 * image.shape[1], 2
    for x1, y1, x2, y2, confidence, name in boxes:
        colour = class_colour(name)
        left, top, right, bottom = (int(v * scale) for v in (x1, y1, x2, y2))
        cv2.rectangle(image, (left, top), (right, bottom), colour, 2 * scale)
        text = f"{name} {confidence:.2f}"
        (width, height), baseline = cv2.getTextSize(text, font, font_scale, weight)
        x = min(max(0, left), image.shape[1] - width - 6)
        y = top - 6 if top - height - baseline - 6 >= 0 else min(image.shape[0] - baseline - 2, bottom + height + 6)
        cv2.rectangle(image, (x, y - height - 4), (x + width + 6, y + baseline), (20, 20, 20), cv2.FILLED)
        cv2.putText(image, text, (x + 3, y), font, font_scale, colour, weight, cv2.LINE_AA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 88])
    return encoded.tobytes() if ok else None


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


def alarm_banner(database: Any) -> None:
    """Unacknowledged drift alarms of every line, at the top of every page."""
    from db.drift import current_alarms

    with database.read() as session:
        alarms = current_alarms(session=session, unacknowledged_only=True)
    if not alarms:
        return
    shown = "; ".join(f"**{a.line}**: {a.label} ({a.severity})" + (f", {a.action}" if a.action else "") for a in alarms[:3])
    more = f" and {len(alarms) - 3} more" if len(alarms) > 3 else ""
    severe = any(a.severity == "severe" for a in alarms)
    (st.error if severe else st.warning)(
        f"Drift alarm{'s' if len(alarms) > 1 else ''}: {shown}{more}. An engineer or manager acknowledges it on the Drift page.", icon=":material/warning:"
    )

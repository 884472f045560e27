"""The box editor widget: draw, move, resize, delete and classify boxes on a phone's image with the mouse.

A Streamlit custom component (``st.components.v2``; its JavaScript and CSS sit beside this file, no
build step). Boxes are in pixels of the stored image, as :class:`core.labelling.LabelBox` wants them.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import streamlit as st

from core.imaging import InvalidImageError, read_image

_HERE = Path(__file__).parent
_COMPONENT = st.components.v2.component(
    "shadowline_box_editor",
    html="",
    css=(_HERE / "box_editor.css").read_text(),
    js=(_HERE / "box_editor.js").read_text(),
)


@st.cache_data(ttl=300, max_entries=64, show_spinner=False)
def image_payload(path: str) -> tuple[str, int, int] | None:
    """The stored image as a JPEG data URL with its width and height; None when it cannot be read.

    The image is decoded and encoded again, so what the browser gets is a checked, plain JPEG whatever
    the stored file held.
    """
    try:
        image = read_image(Path(path))
    except InvalidImageError:
        return None
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        return None
    height, width = image.shape[:2]
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii"), width, height


@dataclass(frozen=True)
class Drawing:
    """The editor's boxes and the revision (the phone) they were drawn on."""

    revision: str
    boxes: list[dict[str, Any]]


def box_editor(
    *, key: str, image: tuple[str, int, int], boxes: list[dict[str, Any]], classes: list[str], revision: str, model_boxes: list[dict[str, Any]] | None = None
) -> Drawing:
    """Show the editor and return the boxes as they are now (``class_name, x1, y1, x2, y2``) with their revision.

    Args:
        key: Widget key; the boxes the engineer made are kept under it between reruns.
        image: From :func:`image_payload`.
        boxes: The boxes to start from.
        classes: Class names in the order of the keys 1-9.
        revision: Starting again from ``boxes`` happens when this changes (a new phone, or a reset).
            The boxes come back with the revision they were drawn under, for the caller to check.
        model_boxes: What the "Model's boxes" button restores (default: ``boxes``).
    """
    url, width, height = image
    start = [_plain(b) for b in boxes]
    result = _COMPONENT(
        key=key,
        data={
            "image": url,
            "width": width,
            "height": height,
            "boxes": start,
            "model_boxes": [_plain(b) for b in (model_boxes if model_boxes is not None else boxes)],
            "classes": classes,
            "colours": {name: _css_colour(name) for name in classes},
            "revision": revision,
        },
        default={"drawing": {"revision": revision, "boxes": start}},
        on_drawing_change=lambda: None,
    )
    drawing = getattr(result, "drawing", None)
    if isinstance(drawing, dict) and isinstance(drawing.get("boxes"), list):
        return Drawing(str(drawing.get("revision")), [_plain(b) for b in drawing["boxes"]])
    return Drawing(revision, start)


def as_drawn(boxes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``boxes`` as the editor gives them back (class name and corners to 0.1 px), for comparing with a :class:`Drawing`."""
    return [_plain(b) for b in boxes]


def _plain(box: dict[str, Any]) -> dict[str, Any]:
    return {"class_name": str(box["class_name"]), **{k: round(float(box[k]), 1) for k in ("x1", "y1", "x2", "y2")}}


def _css_colour(name: str) -> str:
    """The class's colour on every page (``app.widgets.class_colour``, BGR) as CSS ``#rrggbb``."""
    from app.widgets import class_colour

    b, g, r = class_colour(name)
    return f"#{r:02x}{g:02x}{b:02x}"

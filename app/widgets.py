"""Shared drawing helpers: images with the model's boxes, times in the plant's zone."""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
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
    for x1, y1, x2, y2, _, name in boxes:
        cv2.rectangle(image, (int(x1), int(y1)), (int(x2), int(y2)), class_colour(name), thickness)
    placed: list[Rect] = []
    for x1, y1, x2, y2, confidence, name in boxes:  # labels after every box, so no box line crosses a label
        _put_label(image, f"{name} {confidence:.2f}", (int(x1), int(y1), int(x2), int(y2)), class_colour(name), scale, max(1, thickness // 2), placed)
    return np.ascontiguousarray(image[..., ::-1])


Rect = tuple[int, int, int, int]


def _put_label(image: np.ndarray, text: str, box: Rect, colour: tuple[int, int, int], scale: float, weight: int, placed: list[Rect]) -> None:
    """A box's label on a dark plate, above the box, else inside its top, else below it, else stacked lower: never on another label."""
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, weight)
    plate_h = height + baseline + 4
    x1, y1, _, y2 = box
    left = max(0, min(x1, image.shape[1] - width - 4))
    tops = [y1 - plate_h, y1 + 1, y2 + 1]
    tops += [tops[-1] + plate_h * step for step in range(1, 8)]
    top = tops[0]
    for candidate in tops:
        candidate = max(0, min(candidate, image.shape[0] - plate_h))
        rect = (left, candidate, left + width + 4, candidate + plate_h)
        if not any(rect[0] < r[2] and r[0] < rect[2] and rect[1] < r[3] and r[1] < rect[3] for r in placed):
            top = candidate
            break
    else:
        top = max(0, min(top, image.shape[0] - plate_h))
    placed.append((left, top, left + width + 4, top + plate_h))
    cv2.rectangle(image, (left, top), (left + width + 4, top + plate_h), (32, 32, 32), cv2.FILLED)
    cv2.putText(image, text, (left + 2, top + height + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, weight, cv2.LINE_AA)


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
    font_scale, weight = 0.0016 * image.shape[1], 2
    scaled: list[tuple[Rect, float, str]] = [
        ((int(x1 * scale), int(y1 * scale), int(x2 * scale), int(y2 * scale)), confidence, name) for x1, y1, x2, y2, confidence, name in boxes
    ]
    for (left, top, right, bottom), _, name in scaled:
        cv2.rectangle(image, (left, top), (right, bottom), class_colour(name), 2 * scale)
    placed: list[Rect] = []
    for box, confidence, name in scaled:  # each label on its own plate, never on another's (see _put_label)
        _put_label(image, f"{name} {confidence:.2f}", box, class_colour(name), font_scale, weight, placed)
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


#: Who is told about the system's own health (latency, queue, failures): the people who can act on it.
SYSTEM_HEALTH_ROLES = frozenset({"engineer", "admin"})


#: Browsers in the order their user-agent strings must be tested (Edge and Opera also say "Chrome", Chrome also says "Safari").
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Chromium (headless)"),
    ("Chromium/", "Chromium"),
    ("Chrome/", "Chrome"),
    ("Version/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def browser_in_words(user_agent: str | None) -> str:
    """A sign-in's browser as people name it ("Chrome 131 on Windows"), from its user-agent string; the string itself
    (shortened) when it is no browser known here, "" when there is none."""
    agent = (user_agent or "").strip()
    if not agent:
        return ""
    system = next((name for token, name in _SYSTEMS if token in agent), None)
    for token, name in _BROWSERS:
        found = re.search(re.escape(token) + r"(\d+)", agent)
        if found and (token != "Version/" or "Safari/" in agent):
            return f"{name} {found.group(1)}" + (f" on {system}" if system else "")
    return agent if len(agent) <= 40 else agent[:39] + "…"


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
        what = incident.text.removeprefix(incident.line + ": ")
        if not incident.ongoing:  # every metric is back within bounds: it waits only to be acknowledged
            cleared = max((a.cleared_at for a in incident.alarms if a.cleared_at is not None), default=None)
            since = f" {_ago(cleared)}" if cleared is not None else ""
            text = f"**{heading[incident.scope]}, over** · **{incident.line}**: {what}. Back to normal{since}; not acknowledged yet. {who[incident.scope]}"
            st.info(text, icon=":material/check_circle:")
            continue
        text = f"**{heading[incident.scope]}** · **{incident.line}**: {what}. {who[incident.scope]}"
        (st.error if incident.severity == "severe" else st.warning)(text, icon=":material/warning:")
    if len(incidents) > 3:
        st.caption(f"…and {len(incidents) - 3} more incidents: see the Drift page.")


def _ago(moment: datetime) -> str:
    """``3 min ago`` (the banner has no plant time zone to hand; a span needs none)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = max(0.0, (datetime.now(UTC) - moment).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


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


#: How long the person who asked sees the answer to their request at the top of every page.
ANSWER_SHOWN = timedelta(days=1)
SEEN_ANSWERS_KEY = "requests.seen_answers"


def waiting_requests(database: Any) -> list[Any]:
    """Requests waiting for a manager, on every line."""
    from db.ladder import list_requests

    with database.read() as session:
        return list_requests(session=session, pending_only=True)


def requests_banner(database: Any, user: Any, waiting: list[Any]) -> None:
    """Managers: what waits for their decision, on every line. The person who asked: the answer, with its note."""
    from db.ladder import decided_requests

    if user.role.value == "manager" and waiting:
        shown = "; ".join(f"**{r.line}**: {r.what} (asked by {r.requested_by})" for r in waiting[:3])
        more = f" and {len(waiting) - 3} more" if len(waiting) > 3 else ""
        st.info(
            f"**{len(waiting)} request{'s' if len(waiting) != 1 else ''} wait{'' if len(waiting) != 1 else 's'} for a manager**: {shown}{more}. "
            "Approve or refuse on the Automation page.",
            icon=":material/inbox:",
        )
    with database.read() as session:
        answers = decided_requests(session=session, since=datetime.now(UTC) - ANSWER_SHOWN, requested_by=user.name, limit=5)
    seen = st.session_state.setdefault(SEEN_ANSWERS_KEY, set())
    for request in answers:
        # A request replaced by the asker's own newer one (obsolete, decided by nobody) is no news to them.
        if request.id in seen or request.decided_by is None or request.decided_by == user.name:
            continue
        note = f": “{request.decision_note}”" if request.decision_note else ""
        by = f" by {request.decided_by}" if request.decided_by else ""
        text, button = st.columns([6, 1], vertical_alignment="center")
        (text.success if request.status == "approved" else text.warning)(
            f"Your request #{request.id} ({request.line}: {request.what}) was **{request.status}**{by}{note}", icon=":material/mail:"
        )
        if button.button("Seen", key=f"requests.seen.{request.id}"):
            seen.add(request.id)
            st.rerun()


#: The ladder's rungs in the floor's words.
LEVEL_WORDS = {
    "human_only": "human only",
    "shadow": "shadow",
    "assist": "AI assistance",
    "partial": "partial automation",
    "canary": "canary",
    "full": "full automation",
}
#: Field names of settings in the floor's words.
FIELD_WORDS = {
    "min_pairs": "phones judged by both, at least",
    "min_agreement": "agreement, at least",
    "max_escape_rate": "escape rate, at most",
    "max_over_reject_rate": "over-reject rate, at most",
    "needs_manager": "a manager approves",
    "max_disagreement": "roll back when overrides exceed",
    "to_level": "roll back to",
    "escape_rate": "escape rate",
    "over_reject_rate": "over-reject rate",
    "canary_share": "canary share",
    "audit_share": "audit share",
    "active_model_id": "active model",
    "candidate_model_id": "candidate",
    "previous_model_id": "rollback target",
    "model_version_id": "model",
}
_SHARE_KEYS = {"canary_share", "audit_share", "to_share", "from_share", "max_disagreement", "min_agreement", "max_escape_rate", "max_over_reject_rate"}


def changes(before: Any, after: Any) -> tuple[Any, Any]:
    """``before`` and ``after`` cut to what differs: of two settings tables, the settings that changed (nested alike)."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return before, after
    old, new = {}, {}
    for key in [*before, *(k for k in after if k not in before)]:
        if before.get(key) == after.get(key):
            continue
        old[key], new[key] = changes(before.get(key), after.get(key))
    return (old, new) if old or new else (before, after)


def plain(value: Any, timezone: str | None = None, models: Mapping[int, str] | None = None) -> str:
    """A before/after value of the audit log in words: ``level: canary; canary share: 5 %`` rather than a dict.

    With ``timezone``, a moment stored as ISO 8601 text is shown in the plant's time, as the rest of the page;
    with ``models`` (id -> version), a model's id is shown as its version's name.
    """
    if value is None or value == {} or value == []:
        return ""
    if isinstance(value, dict):
        return "; ".join(
            f"{FIELD_WORDS.get(str(key), str(key).replace('_', ' '))}: {_plain_item(str(key), item, timezone, models)}" for key, item in value.items()
        )
    if isinstance(value, list):
        return ", ".join(plain(item, timezone, models) for item in value)
    return _moment(value, timezone) or str(value)


_ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([+-]\d{2}:\d{2}|Z)?")


def _moment(item: Any, timezone: str | None) -> str | None:
    """``2026-12-06T17:30:05.123+00:00`` as ``2026-12-06 18:30:05`` in ``timezone``; None when it is not such a moment."""
    if timezone is None or not isinstance(item, str) or not _ISO_MOMENT.fullmatch(item):
        return None
    try:
        moment = datetime.fromisoformat(item)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # the database keeps UTC
    return local_time(moment, timezone, "%Y-%m-%d %H:%M:%S")


def _plain_item(key: str, item: Any, timezone: str | None = None, models: Mapping[int, str] | None = None) -> str:
    if isinstance(item, dict | list):
        return f"({plain(item, timezone, models)})" if isinstance(item, dict) else plain(item, timezone, models)
    if key.endswith("model_id") and models is not None and isinstance(item, int) and not isinstance(item, bool):
        return models.get(item, f"model id {item}")
    if key.endswith("model_id") and item is None:
        return "none"
    moment = _moment(item, timezone)
    if moment is not None:
        return moment
    if key.endswith("level") and isinstance(item, str):
        return LEVEL_WORDS.get(item, item)
    if key in _SHARE_KEYS and isinstance(item, int | float) and not isinstance(item, bool):
        return f"{item * 100:g} %"
    if isinstance(item, bool):
        return "yes" if item else "no"
    if isinstance(item, float):
        return f"{item:.4g}"
    return "none" if item is None else str(item)


#: The query parameter that carries a page's chosen line, so a reload or a shared link opens on it.
LINE_PARAM = "line"


def line_from_url(key: str, options: list[str]) -> None:
    """Before a page's line picker (``key``): a fresh session (a reload, a link) starts on the URL's line.

    A line the picker does not offer (renamed, a typo) is ignored: the page's own default applies.
    """
    wanted = st.query_params.get(LINE_PARAM)
    if key not in st.session_state and wanted in options:
        st.session_state[key] = wanted


def line_to_url(name: str) -> None:
    """After the picker: the chosen line in the URL (``?line=line-2``), which a reload keeps."""
    if st.query_params.get(LINE_PARAM) != name:
        st.query_params[LINE_PARAM] = name


def line_picker(where: Any, options: list[str], *, key: str, **selectbox: Any) -> str:
    """A page's "Line" selectbox in ``where`` (``st`` or a column) that starts on the URL's line and keeps its choice there."""
    line_from_url(key, options)
    chosen = str(where.selectbox("Line", options, key=key, **selectbox))
    line_to_url(chosen)
    return chosen

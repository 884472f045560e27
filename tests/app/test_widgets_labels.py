"""Box labels on annotated images: readable, each on its own plate, none on top of another."""

from __future__ import annotations

import cv2
import numpy as np

from app.widgets import _put_label, annotated_image, labelled_thumbnail


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_labels_of_boxes_that_overlap_do_not_cover_each_other() -> None:
    image = np.zeros((360, 480, 3), np.uint8)
    placed: list[tuple[int, int, int, int]] = []
    # Three boxes starting at nearly the same corner: their labels would all sit at (100, 96).
    for box in ((100, 100, 200, 160), (104, 102, 180, 150), (100, 98, 240, 200)):
        _put_label(image, "scratch 0.91", box, (0, 0, 255), 0.45, 1, placed)
    assert len(placed) == 3
    for i, first in enumerate(placed):
        for second in placed[i + 1 :]:
            assert not _overlaps(first, second), (first, second)
    for left, top, right, bottom in placed:
        assert 0 <= left < right <= image.shape[1] and 0 <= top < bottom <= image.shape[0], "every plate inside the image"


def test_a_box_at_the_top_edge_gets_its_label_inside_the_image(tmp_path) -> None:
    path = tmp_path / "phone.png"
    cv2.imwrite(str(path), np.full((360, 480, 3), 200, np.uint8))
    drawn = annotated_image(str(path), ((10.0, 0.0, 120.0, 60.0, 0.88, "dent"), (300.0, 200.0, 400.0, 300.0, 0.5, "scratch")))
    assert drawn is not None and drawn.shape == (360, 480, 3)
    plate = drawn[2:14, 12:60]
    assert (plate < 60).mean() > 0.5, "the dark label plate is drawn at the top, inside the image"


def test_live_line_thumbnails_draw_overlapping_boxes_with_both_labels(tmp_path) -> None:
    path = tmp_path / "phone.png"
    cv2.imwrite(str(path), np.full((360, 480, 3), 200, np.uint8))
    boxes = ((100.0, 100.0, 200.0, 160.0, 0.55, "scratch"), (102.0, 101.0, 190.0, 150.0, 0.15, "scratch"))
    encoded = labelled_thumbnail(str(path), boxes)
    assert encoded is not None
    image = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape[:2] == (720, 960), "drawn at twice the camera's size"
    plates = (image < 60).all(axis=2)
    rows = np.flatnonzero(plates[:, 200:400].any(axis=1))
    assert rows.size and (np.diff(rows) > 1).any(), "two label plates, one above the other, not one on top of the other"

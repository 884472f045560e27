"""Box labels on annotated images: readable, each on its own plate, none on top of another."""

from __future__ import annotations

import cv2
import numpy as np

from app.widgets import _put_label, annotated_image


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

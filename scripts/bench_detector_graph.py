"""The detector's load-time graph (DFL softmax on the last axis) and one-pass letterbox against the
exported graph and the NumPy letterbox they replaced, interleaved image by image in one process.

    .venv/bin/python scripts/bench_detector_graph.py [THREADS]
"""

import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from core.bench import _render_images  # noqa: E402
from core.detector.onnx_backend import letterbox as new_lb  # noqa: E402
from core.detector.onnx_backend import prepare_graph, with_feature_output  # noqa: E402


def old_lb(image_bgr: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The letterbox as it was before 4c310f6 (three NumPy passes)."""
    height, width = image_bgr.shape[:2]
    out_h, out_w = size
    scale = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR) if (new_w, new_h) != (width, height) else image_bgr
    pad_w, pad_h = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    canvas = np.full((out_h, out_w, 3), 114, np.uint8)
    canvas[top : top + new_h, left : left + new_w] = resized
    blob = canvas[..., ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255.0
    return np.ascontiguousarray(blob), scale, (left, top)


ims = _render_images(100)
threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
for name in ["scratch-v2", "scratch-v2-int8"]:
    raw = (ROOT / "models" / name / "model.onnx").read_bytes()
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    old = ort.InferenceSession(with_feature_output(raw), o, providers=["CPUExecutionProvider"])
    new = ort.InferenceSession(prepare_graph(raw)[0], o, providers=["CPUExecutionProvider"])
    t = {"old": [], "new": []}
    for rep in range(6):
        for i, im in enumerate(ims):
            order = (("old", old, old_lb), ("new", new, new_lb)) if (i + rep) % 2 else (("new", new, new_lb), ("old", old, old_lb))
            for label, s, lb in order:
                a = time.perf_counter()
                s.run(None, {"images": lb(im, (256, 320))[0]})
                t[label].append(time.perf_counter() - a)
    mo, mn = statistics.median(t["old"]) * 1e3, statistics.median(t["new"]) * 1e3
    print(f"{name} threads={threads}: letterbox+inference median old {mo:.2f} ms, new {mn:.2f} ms, ratio {mo / mn:.3f} (n={len(t['old'])} each, interleaved)")

"""Run an exported YOLO detector with onnxruntime: letterbox, one forward pass, NMS in numpy.

The ONNX graph Ultralytics exports ends before non-maximum suppression: its output has shape
``(1, 4 + num_classes, num_anchors)`` with boxes as ``cx, cy, w, h`` in letterboxed input pixels
and one sigmoid score per class. This module does the rest.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    import onnx

LETTERBOX_FILL = 114
#: Name of the extra graph output that carries the pooled backbone features.
FEATURES_OUTPUT = "shadowline_features"


def with_feature_output(model_bytes: bytes) -> bytes | None:
    """The same ONNX graph with one more output: the backbone's deepest feature map, average-pooled.

    In an Ultralytics YOLO export the backbone ends with the SPPF block (the module whose nodes
    include ``MaxPool``); its last node's output, pooled over space, is the model's own summary of
    the image, what the admission check compares with the reference images. Returns None when the
    graph has no such block (the check then uses the input metrics only).
    """
    import onnx

    model = onnx.load_from_string(model_bytes)
    return model.SerializeToString() if _add_feature_output(model) else None


def _add_feature_output(model: onnx.ModelProto) -> bool:
    """Add the pooled features output to ``model`` in place; False where the graph has no SPPF block."""
    from onnx import TensorProto, helper

    graph = model.graph
    if any(output.name == FEATURES_OUTPUT for output in graph.output):
        return True
    modules: dict[int, list[onnx.NodeProto]] = {}
    for node in graph.node:
        match = re.match(r"/model\.(\d+)/", node.name)
        if match:
            modules.setdefault(int(match.group(1)), []).append(node)
    pooling = [index for index, nodes in modules.items() if any(node.op_type == "MaxPool" for node in nodes)]
    if not pooling:
        return False
    feature_map = modules[max(pooling)][-1].output[0]
    graph.node.append(helper.make_node("GlobalAveragePool", [feature_map], ["shadowline_pooled"], name="/shadowline/pool"))
    graph.node.append(helper.make_node("Flatten", ["shadowline_pooled"], [FEATURES_OUTPUT], name="/shadowline/flatten", axis=1))
    graph.output.append(helper.make_tensor_value_info(FEATURES_OUTPUT, TensorProto.FLOAT, None))
    return True


def _dfl_softmax_on_last_axis(model: onnx.ModelProto) -> bool:
    """Rewrite the head's DFL softmax to run over the last axis; True where the graph had one.

    Ultralytics' head decodes each box side from 16 bins: reshape to ``(1, 4, 16, A)``, transpose
    to ``(1, 16, 4, A)``, softmax over axis 1, then a 1x1 convolution with the weights 0..15 (the
    expected bin). onnxruntime runs a softmax over a middle axis by transposing around it: 0.9 ms
    of an INT8 image's 9 ms. The same arithmetic with the bins on the last axis (transpose to
    ``(1, 4, A, 16)``, softmax over the last axis, a matrix product with the weights as a
    ``(16, 1)`` column) gives bit-identical boxes (checked on the shipped FP32 and INT8 models) in
    a tenth of the time. Runs on the graph in memory at load time; the file on disk, whose hash
    the card vouches for, is untouched.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {output: node for node in graph.node for output in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {initializer.name: initializer for initializer in graph.initializer}
    for softmax in graph.node:
        if softmax.op_type != "Softmax" or not softmax.name.endswith("/dfl/Softmax"):
            continue
        transpose = producers.get(softmax.input[0])
        users = consumers.get(softmax.output[0], [])
        axis = next((helper.get_attribute_value(a) for a in softmax.attribute if a.name == "axis"), None)
        if transpose is None or transpose.op_type != "Transpose" or len(users) != 1 or users[0].op_type != "Conv" or axis != 1:
            return False
        conv = users[0]
        perm = next((list(helper.get_attribute_value(a)) for a in transpose.attribute if a.name == "perm"), None)
        if perm != [0, 2, 1, 3] or len(conv.input) != 2 or conv.input[1] not in initializers:
            return False
        bins = numpy_helper.to_array(initializers[conv.input[1]]).astype(np.float32)
        if bins.ndim != 4 or bins.shape[0] != 1 or bins.shape[2:] != (1, 1):
            return False
        # The convolution's (1, 1, 4, A) and the product's (1, 4, A, 1) hold the same values in the
        # same order; the Reshape after it gives (1, 4, A) either way.
        graph.initializer.append(numpy_helper.from_array(bins.reshape(-1, 1), "shadowline_dfl_bins"))
        rewritten = [
            helper.make_node("Transpose", [transpose.input[0]], ["shadowline_dfl_bins_last"], perm=[0, 1, 3, 2], name="/shadowline/dfl/Transpose"),
            helper.make_node("Softmax", ["shadowline_dfl_bins_last"], ["shadowline_dfl_softmax"], axis=-1, name="/shadowline/dfl/Softmax"),
            helper.make_node("MatMul", ["shadowline_dfl_softmax", "shadowline_dfl_bins"], ["shadowline_dfl_expected"], name="/shadowline/dfl/MatMul"),
        ]
        for node in consumers.get(conv.output[0], []):
            node.input[:] = ["shadowline_dfl_expected" if name == conv.output[0] else name for name in node.input]
        # Keep the graph in topological order: the new nodes go where the transpose was.
        nodes: list[onnx.NodeProto] = []
        for node in graph.node:
            if node is transpose:
                nodes.extend(rewritten)
            elif node is not softmax and node is not conv:
                nodes.append(node)
        del graph.node[:]
        graph.node.extend(nodes)
        stale = {transpose.output[0], softmax.output[0], conv.output[0]}
        kept_info = [info for info in graph.value_info if info.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(kept_info)
        if not any(conv.input[1] in node.input for node in graph.node):
            graph.initializer.remove(initializers[conv.input[1]])
        return True
    return False


def prepare_graph(model_bytes: bytes, *, features: bool = True) -> tuple[bytes, bool]:
    """The graph as Shadowline runs it: the features output added (when asked and possible) and the
    DFL softmax on its last axis. Returns the serialized graph and whether it gives features."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    gives_features = _add_feature_output(model) if features else False
    _dfl_softmax_on_last_axis(model)
    return model.SerializeToString(), gives_features


def letterbox(image_bgr: np.ndarray, size: tuple[int, int], *, resized: np.ndarray | None = None) -> tuple[np.ndarray, float, tuple[float, float]]:
    """Resize keeping aspect ratio and pad to ``size = (height, width)``, as Ultralytics does.

    Args:
        resized: A bilinear resize of the image made earlier (the input metrics' copy,
            :func:`core.image_metrics.scaled_for_metrics`): used as it is when it has the size this
            letterbox resizes to (OpenCV's result depends only on the image and that size), else ignored.

    Returns:
        The network input ``(1, 3, height, width)`` float32 RGB in ``[0, 1]``, the scale applied
        and the ``(left, top)`` padding in pixels.
    """
    height, width = image_bgr.shape[:2]
    out_h, out_w = size
    scale = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    pad_w, pad_h = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, left = round(pad_h - 0.1), round(pad_w - 0.1)
    canvas = np.full((out_h, out_w, 3), LETTERBOX_FILL, np.uint8)
    window = canvas[top : top + new_h, left : left + new_w]
    if (new_w, new_h) == (width, height):
        window[:] = image_bgr
    elif resized is not None and resized.shape[:2] == (new_h, new_w):
        window[:] = resized
    else:
        # Bilinear, as Ultralytics' own LetterBox does at prediction time; written straight into the canvas.
        cv2.resize(image_bgr, (new_w, new_h), dst=window, interpolation=cv2.INTER_LINEAR)
    # One pass in OpenCV (BGR to RGB, HWC to CHW, to float in [0, 1]): 0.3 ms less than NumPy's three.
    blob = cv2.dnn.blobFromImage(canvas, 1 / 255.0, swapRB=True)
    return blob, scale, (left, top)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box ``(4,)`` against ``(N, 4)`` boxes; returns ``(N,)``."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou_threshold: float, max_det: int = 100) -> np.ndarray:
    """Class-aware greedy NMS. Returns indices of kept boxes, best score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size and len(keep) < max_det:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        same_class = classes[rest] == classes[best]
        overlap = box_iou(boxes[best], boxes[rest]) > iou_threshold
        order = rest[~(same_class & overlap)]
    return np.array(keep, np.int64)


class OnnxPredictor:
    """A YOLO ONNX export run with onnxruntime on the CPU."""

    def __init__(self, weights: Path, threads: int = 0, *, features: bool = True, spin: bool = True, narrow_when_busy: bool = False) -> None:
        """Load ``weights``.

        Args:
            threads: onnxruntime's threads for one inference (0: its default, one per core).
            features: Add the pooled backbone features output (the admission check's) where the graph allows.
            spin: Let idle inference threads spin-wait for the next operator (onnxruntime's default).
                Faster for one stream of inferences (measured on 2 cores: 147 against 121 images/s),
                but with several inferences at once the spinning threads take the cores the others
                need: the inspection service, two phones at once on 2 threads each, used 92 ms of CPU
                per phone spinning against 36 ms without, so it turns spinning off.
            narrow_when_busy: An inference that starts while another runs in this predictor runs on
                one thread (a second session of the same graph), so two at once take one core each
                instead of four threads fighting over two cores. A lone inference still gets every
                thread (the lowest latency). On 2 cores, two streams of images on one thread each did
                117 images/s at 16.9 ms of CPU per image, against 103 at 18.5 ms on two threads each.
        """
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        graph, self.gives_features = prepare_graph(Path(weights).read_bytes(), features=features)
        self._session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        #: One-thread session for an inference that starts while another runs (see ``narrow_when_busy``).
        self._narrow: ort.InferenceSession | None = None
        if narrow_when_busy and options.intra_op_num_threads != 1:
            narrow = ort.SessionOptions()
            narrow.intra_op_num_threads = 1
            narrow.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            self._narrow = ort.InferenceSession(graph, narrow, providers=["CPUExecutionProvider"])
        self._running = 0
        self._running_lock = threading.Lock()
        #: Inferences run on the one-thread session so far.
        self.narrow_runs = 0
        self._outputs = [self._session.get_outputs()[0].name] + ([FEATURES_OUTPUT] if self.gives_features else [])
        model_input = self._session.get_inputs()[0]
        self._input = model_input.name
        # The export fixes the input size; a rectangle (e.g. 256x320 for 4:3 frames) wastes no work on padding.
        self.input_size: tuple[int, int] = (int(model_input.shape[2]), int(model_input.shape[3]))

    def predict(self, image_bgr: np.ndarray, conf: float, iou: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes ``(N, 4)`` xyxy in pixels of ``image_bgr``, confidences ``(N,)`` and class ids ``(N,)``."""
        return self.predict_with_features(image_bgr, conf, iou)[:3]

    def predict_with_features(
        self, image_bgr: np.ndarray, conf: float, iou: float, *, resized: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """:meth:`predict`, and the pooled backbone features ``(F,)`` (None when the graph gives none).

        Args:
            resized: A bilinear resize of the image made earlier, see :func:`letterbox`.
        """
        blob, scale, (left, top) = letterbox(image_bgr, self.input_size, resized=resized)
        with self._running_lock:
            session = self._narrow if self._narrow is not None and self._running else self._session
            self._running += 1
            if session is not self._session:
                self.narrow_runs += 1
        try:
            outputs = session.run(self._outputs, {self._input: blob})
        finally:
            with self._running_lock:
                self._running -= 1
        output = outputs[0][0]  # (4 + nc, anchors)
        features = outputs[1][0].astype(np.float32) if self.gives_features else None
        scores_all = output[4:]
        classes = scores_all.argmax(axis=0)
        scores = scores_all[classes, np.arange(scores_all.shape[1])]
        candidates = scores >= conf
        if not candidates.any():
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), features
        cx, cy, w, h = output[:4, candidates]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        scores, classes = scores[candidates], classes[candidates]
        kept = non_max_suppression(boxes, scores, classes, iou)
        boxes = (boxes[kept] - [left, top, left, top]) / scale
        height, width = image_bgr.shape[:2]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        return boxes.astype(np.float32), scores[kept].astype(np.float32), classes[kept].astype(np.int64), features

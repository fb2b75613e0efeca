"""YuNet run by onnxruntime: the network of ``cv2.FaceDetectorYN`` with OpenCV's own pre- and
post-processing (``modules/objdetect/src/face_detect.cpp``) in NumPy, so that the faces found
are OpenCV's within float rounding (tested against it), at about half its CPU time on a 2-core
AMD EPYC (14 ms against 25-28 ms a 640x480 frame on one thread: ``python -m
utils.predict.benchmark`` prints both on the machine it runs on).

    yunet = OnnxYuNet(path, score_threshold=0.6, nms_threshold=0.3, top_k=5000)
    faces = yunet.detect(bgr_image)    # float32 [N, 15], FaceDetectorYN.detect()'s layout

One session serves every thread (onnxruntime's run() is thread-safe), each run on one core:
the app detects several images at once, one a reading thread.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

STRIDES = (8, 16, 32)
DIVISOR = 32  # the input is padded right and down to multiples of this
OUTPUTS = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in STRIDES]


class OnnxYuNet:
    def __init__(self, path: Path, score_threshold: float, nms_threshold: float, top_k: int):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options,
                                                    providers=["CPUExecutionProvider"])
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self.top_k = top_k

    def detect(self, image: np.ndarray) -> np.ndarray:
        """float32 [N, 15] for a BGR uint8 image: box x, y, w, h, five landmarks' x, y, score;
        in OpenCV's order (after its non-maximum suppression)."""
        height, width = image.shape[:2]
        pad_h, pad_w = -(-height // DIVISOR) * DIVISOR, -(-width // DIVISOR) * DIVISOR
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :height, :width] = image.transpose(2, 0, 1)
        outputs = dict(zip(OUTPUTS, self.session.run(OUTPUTS, {"input": blob})))
        faces = np.concatenate([self._decoded(outputs, stride, pad_w) for stride in STRIDES])
        if len(faces) <= 1:
            return faces
        # OpenCV's suppression, on the boxes truncated to integers as it passes them.
        boxes = faces[:, :4].astype(np.int32).tolist()
        keep = cv2.dnn.NMSBoxes(boxes, faces[:, 14].tolist(), self.score_threshold,
                                self.nms_threshold, 1.0, self.top_k)
        return faces[np.asarray(keep, np.int64).reshape(-1)]

    def _decoded(self, outputs: dict, stride: int, pad_w: int) -> np.ndarray:
        """The faces scoring at least the threshold at one stride, in its grid's order."""
        cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0, 1)
        obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0, 1)
        score = np.sqrt(cls * obj)
        cells = np.flatnonzero(score >= np.float32(self.score_threshold))
        rows, cols = np.divmod(cells, pad_w // stride)
        grid = np.stack([cols, rows], axis=1).astype(np.float32)  # x, y of each cell
        scale = np.float32(stride)
        bbox = outputs[f"bbox_{stride}"][0, cells]
        centre = (grid + bbox[:, :2]) * scale
        size = np.exp(bbox[:, 2:4]) * scale
        landmarks = (outputs[f"kps_{stride}"][0, cells].reshape(-1, 5, 2) + grid[:, None]) * scale
        return np.concatenate([centre - size / np.float32(2), size,
                               landmarks.reshape(-1, 10), score[cells, None]], axis=1)

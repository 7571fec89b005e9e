"""Faces followed through consecutive video frames: a full search every few frames, windows in between.

:class:`FaceTracker` is what ``fer-bench predict --redetect N`` uses on videos
and the camera; the detectors, the alignment and the crops are
:mod:`fer_bench.faces`'.
"""

from __future__ import annotations

import numpy as np

from .faces import DEFAULT_DETECTOR, DEFAULT_MAX_SIDE, DEFAULT_MIN_FACE, aligned_faces, get_detector, to_gray


def _overlap(a, b) -> float:
    """Intersection over union of two ``(x, y, w, h, ...)`` boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Finds faces in consecutive video frames, searching the whole frame only every ``redetect`` frames.

    On a full search it is :func:`fer_bench.faces.find_faces`.  In between, each face of the
    previous frame is searched for again only in a window around its last box
    (the box grown by ``margin`` times its size on every side), for faces at
    least ``shrink`` times its last width, which the detector searches on a
    small, downscaled crop: on 640x480 frames with Haar that is several times
    cheaper than the full search.  A face lost in its window is dropped until
    the next full search.  A frame with no face to follow is searched in
    full, so a face entering an empty scene is found at once, and one entering
    beside tracked faces within ``redetect`` frames.  ``redetect=1`` searches
    every frame in full (exactly :func:`fer_bench.faces.find_faces_many`).

    Parameters
    ----------
    detector : str
        Registry name in :data:`fer_bench.faces.DETECTORS`.
    redetect : int
        Search the whole frame every ``redetect``-th call.
    min_face, max_side : int
        As :func:`fer_bench.faces.find_faces`.
    margin : float
        Window around a tracked face, as a fraction of its box size per side.
    shrink : float
        Smallest face searched for in the window, as a fraction of the last width.
    """

    def __init__(self, detector: str = DEFAULT_DETECTOR, *, redetect: int = 1, min_face: int = DEFAULT_MIN_FACE,
                 max_side: int = DEFAULT_MAX_SIDE, margin: float = 0.5, shrink: float = 0.7):
        if int(redetect) < 1:
            raise ValueError(f"redetect={redetect}; must be at least 1 (1: search every frame in full)")
        self.finder = get_detector(detector)
        self.redetect = int(redetect)
        self.min_face = int(min_face)
        self.max_side = int(max_side)
        self.margin = float(margin)
        self.shrink = float(shrink)
        self._boxes: list = []
        self._since_full = 0
        self.full_searches = 0
        """How many frames were searched in full so far."""

    def _follow(self, gray) -> list:
        """Boxes of the tracked faces, each searched for in its window; lost faces left out."""
        height, width = gray.shape
        found = []
        for box in self._boxes:
            x, y, w, h = box[:4]
            x0, y0 = max(0, int(x - self.margin * w)), max(0, int(y - self.margin * h))
            x1, y1 = min(width, int(x + w + self.margin * w)), min(height, int(y + h + self.margin * h))
            window = np.ascontiguousarray(gray[y0:y1, x0:x1])
            smallest = max(self.min_face, int(self.shrink * w))
            if min(window.shape) < smallest:
                continue
            candidates = [(cx + x0, cy + y0, cw, ch, score) for cx, cy, cw, ch, score in
                          self.finder.detect(window, min_face=smallest, max_side=self.max_side)]
            if not candidates:
                continue
            best = max(candidates, key=lambda c: _overlap(c, box))
            # Two tracked faces that ran into one: keep the first.
            if all(_overlap(best, other) < 0.5 for other in found):
                found.append(best)
        return sorted(found, key=lambda b: (b[0], b[1]))

    def find(self, image) -> list:
        """The faces of the next frame (gray, BGR or BGRA), as :func:`fer_bench.faces.find_faces` returns them."""
        gray = to_gray(image)
        if self._boxes and self._since_full < self.redetect - 1:
            boxes = self._follow(gray)
            self._since_full += 1
        else:
            boxes = self.finder.detect(gray, min_face=self.min_face, max_side=self.max_side)
            self._since_full = 0
            self.full_searches += 1
        self._boxes = boxes
        return aligned_faces(gray, boxes, self.finder)

    def find_many(self, images) -> list:
        """:meth:`find` on each of ``images`` in order; one list of faces per image."""
        return [self.find(image) for image in images]

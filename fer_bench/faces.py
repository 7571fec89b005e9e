"""Find faces in photos and video frames and turn each into the 48x48 gray face the models expect.

Four detectors, in the registry :data:`DETECTORS` (the CLI's choices come from it):

``haar``
    OpenCV's Viola-Jones cascade ``haarcascade_frontalface_default.xml``
    (from ``cv2.data.haarcascades``): fast, finds small faces, more false alarms.
``dlib-hog``
    dlib's HOG + linear SVM frontal detector (built into dlib): fast, misses
    tilted and covered faces, and finds some faces that are not there.
``dlib-cnn``
    dlib's MMOD CNN (``mmod_human_face_detector.dat`` from the
    ``face_recognition_models`` package): the most robust to pose and light,
    and by far the slowest on a CPU.
``dlib-verified`` (the default)
    dlib-hog at a permissive threshold, each candidate confirmed by the CNN
    on a small crop around it: most of the CNN's recall and its few false
    faces at a few times dlib-hog's cost (measured by
    ``benchmarks/bench_detectors.py``).

Every face found is aligned with dlib's 5-point landmark model: the crop is
the similarity transform whose rotation makes the eye line horizontal and
whose scale and shift put the five points (eye corners, base of the nose)
where they sit, on average, in FER-2013's own crops (:data:`FER2013_FIVE_POINTS`).
So a face cut from a photo has the margin a FER-2013 training face has, whichever
detector found it, and a tilted head is turned upright.

Models are loaded lazily, once per process.  Nothing here imports TensorFlow.
Following faces through video frames is :mod:`fer_bench.tracking`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from fer_classic.features import LandmarkModelError, face_models_dir

FACE_SIZE = 48
DEFAULT_MIN_FACE = 48
DEFAULT_MAX_SIDE = 2000
FIVE_POINT_MODEL = "shape_predictor_5_face_landmarks.dat"
CNN_DETECTOR_MODEL = "mmod_human_face_detector.dat"

# Where dlib's five points (image-right eye outer and inner corner, image-left
# eye outer and inner corner, base of the nose) lie in a 48x48 FER-2013 face,
# in pixel-index coordinates.  Measured on 600 random FER-2013 training faces:
# each was enlarged 4x, padded, found by dlib-hog (440 of 600 found) and given
# to the 5-point model; the points were mapped back to 48x48 coordinates,
# averaged, and made left-right symmetric (FER-2013 holds faces turned both
# ways).  The eye line sits at 38% of the height and the eyes 17 px apart:
# FER-2013's crops are tight, from the forehead just above the brows to the
# chin.  Aligning to these points reproduces that margin; the re-cropped FER
# face agrees with the original (tests/fer_classic/test_faces.py).
FER2013_FIVE_POINTS = np.array(
    [[35.28, 18.31], [28.49, 18.59], [11.72, 18.31], [18.51, 18.59], [23.5, 31.09]], dtype=np.float64
)

_MODELS: dict = {}


class FaceModelError(LandmarkModelError):
    """A detector or landmark model file is missing, or dlib is not installed."""


@dataclass(frozen=True)
class Face:
    """One face found in an image.

    Attributes
    ----------
    box : tuple of int
        ``(x, y, width, height)`` of the detector's box, in the original image's pixels.
    score : float
        The detector's confidence (Haar: number of merged neighbours; dlib: SVM or CNN score).
    landmarks : ndarray (5, 2)
        dlib's five points (x, y) in the original image's pixels.
    roll : float
        Angle of the eye line in degrees (positive: the image-right eye is lower);
        the crop was rotated by this much to put the eyes level.
    crop : ndarray (48, 48) uint8
        The aligned gray face, framed like a FER-2013 face.
    """

    box: tuple
    score: float
    landmarks: np.ndarray
    roll: float
    crop: np.ndarray


# --------------------------------------------------------------------------- images


def to_gray(image) -> np.ndarray:
    """Any decoded image (gray, BGR or BGRA; uint8 or not) -> contiguous uint8 gray."""
    import cv2

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.ndim != 2:
        raise ValueError(f"expected a gray or colour image, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    return np.ascontiguousarray(image)


def _dlib():
    try:
        import dlib
    except ImportError:
        raise FaceModelError("dlib is needed to find and align faces: pip install dlib-bin") from None
    return dlib


def _model_path(name: str) -> str:
    path = os.path.join(face_models_dir(), name)
    if not os.path.isfile(path):
        raise FaceModelError(
            f"{path}: dlib model file missing; reinstall it: pip install --force-reinstall face_recognition_models"
        )
    return path


def five_point_predictor():
    """dlib's 5-point landmark model, loaded once per process."""
    if "five_points" not in _MODELS:
        _MODELS["five_points"] = _dlib().shape_predictor(_model_path(FIVE_POINT_MODEL))
    return _MODELS["five_points"]


# --------------------------------------------------------------------------- detectors


class FaceDetector:
    """Base class: finds face boxes in a gray image.

    Subclasses set ``native_min_face``, the smallest face (box width in pixels)
    they find at scale 1, and implement :meth:`_detect` on an image already
    scaled for them.  :meth:`detect` picks that scale from ``min_face`` (faces
    smaller than the detector's native size are searched for on an enlarged
    image, larger minimums allow a shrunken one) and caps it so the image
    searched is at most ``max_side`` pixels long: huge images are searched
    downscaled, and boxes are mapped back to original pixels.
    """

    name = ""
    native_min_face = 80
    # Multiplies the detector's box into the box dlib's 5-point model was
    # trained on (dlib-hog's); see :class:`HaarDetector`.
    landmark_box = (0.0, 0.0, 1.0)

    def _detect(self, gray: np.ndarray) -> list:
        raise NotImplementedError

    def _detect_many(self, grays: list) -> list:
        return [self._detect(gray) for gray in grays]

    def detection_scale(self, shape, *, min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE) -> float:
        """Factor by which an image of ``shape`` is resized before it is searched."""
        if min_face < 1:
            raise ValueError(f"min_face={min_face}; must be at least 1 pixel")
        scale = self.native_min_face / float(min_face)
        return min(scale, max_side / float(max(shape[:2])))

    def effective_min_face(self, shape, *, min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE) -> int:
        """The smallest face this detector can find in an image of ``shape`` (at least ``min_face``)."""
        scale = self.detection_scale(shape, min_face=min_face, max_side=max_side)
        return max(int(min_face), int(math.ceil(self.native_min_face / scale)))

    def detect(self, image, *, min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE) -> list:
        """Boxes ``[(x, y, w, h, score), ...]`` of faces at least ``min_face`` pixels wide, in original pixels."""
        return self.detect_many([image], min_face=min_face, max_side=max_side)[0]

    def detect_many(self, images, *, min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE) -> list:
        """:meth:`detect` over a list of images; images of one size are searched as one batch where the detector can."""
        import cv2

        grays = [to_gray(image) for image in images]
        scaled, scales = [], []
        for gray in grays:
            scale = self.detection_scale(gray.shape, min_face=min_face, max_side=max_side)
            if abs(scale - 1.0) > 1e-3:
                interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
                gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=interpolation)
            else:
                scale = 1.0
            scaled.append(np.ascontiguousarray(gray))
            scales.append(scale)
        results = []
        for gray, scale, found in zip(grays, scales, self._detect_many(scaled)):
            height, width = gray.shape
            boxes = []
            for x, y, w, h, score in found:
                x, y, w, h = (int(round(v / scale)) for v in (x, y, w, h))
                # Clip to the image: dlib boxes may reach past the border.
                x0, y0 = max(x, 0), max(y, 0)
                x1, y1 = min(x + w, width), min(y + h, height)
                if x1 - x0 < 1 or y1 - y0 < 1 or w < min_face:
                    continue
                boxes.append((x0, y0, x1 - x0, y1 - y0, float(score)))
            boxes.sort(key=lambda b: (b[0], b[1]))  # left to right: a stable order across frames
            results.append(boxes)
        return results


class HaarDetector(FaceDetector):
    """OpenCV's frontal-face Haar cascade (``cv2.CascadeClassifier``)."""

    name = "haar"
    # Its window is 24 px, but below about 40 px it misses many faces.
    native_min_face = 40
    # Haar boxes are larger than dlib's and start higher: on 427 FER-2013 faces
    # found by both, dlib's box began 6% (x) and 13% (y) of the Haar width
    # further in and was 88% as wide.
    landmark_box = (0.06, 0.13, 0.88)

    def __init__(self, scale_factor: float = 1.1, min_neighbors: int = 5):
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def _cascade(self):
        if "haar" not in _MODELS:
            import cv2

            path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
            cascade = cv2.CascadeClassifier(path)
            if cascade.empty():
                raise FaceModelError(f"{path}: OpenCV's Haar cascade could not be loaded; reinstall opencv-python-headless")
            _MODELS["haar"] = cascade
        return _MODELS["haar"]

    def _detect(self, gray):
        boxes, _, weights = self._cascade().detectMultiScale3(
            gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
            minSize=(self.native_min_face, self.native_min_face), outputRejectLevels=True,
        )
        return [(*box, weight) for box, weight in zip(np.asarray(boxes).reshape(-1, 4), np.ravel(weights))]


class DlibHogDetector(FaceDetector):
    """dlib's HOG frontal face detector (``dlib.get_frontal_face_detector``)."""

    name = "dlib-hog"
    native_min_face = 80  # its sliding window is 80x80

    def _detector(self):
        if "dlib-hog" not in _MODELS:
            _MODELS["dlib-hog"] = _dlib().get_frontal_face_detector()
        return _MODELS["dlib-hog"]

    def _detect(self, gray):
        rects, scores, _ = self._detector().run(gray, 0, 0.0)
        return [(r.left(), r.top(), r.width(), r.height(), s) for r, s in zip(rects, scores)]


class DlibCnnDetector(FaceDetector):
    """dlib's MMOD CNN face detector (``dlib.cnn_face_detection_model_v1``)."""

    name = "dlib-cnn"
    native_min_face = 80  # trained on faces of about 80x80 pixels

    def __init__(self, batch_size: int = 8):
        self.batch_size = batch_size

    def _detector(self):
        if "dlib-cnn" not in _MODELS:
            _MODELS["dlib-cnn"] = _dlib().cnn_face_detection_model_v1(_model_path(CNN_DETECTOR_MODEL))
        return _MODELS["dlib-cnn"]

    @staticmethod
    def _boxes(found):
        return [(d.rect.left(), d.rect.top(), d.rect.width(), d.rect.height(), d.confidence) for d in found]

    def _detect(self, gray):
        return self._boxes(self._detector()(gray, 0))

    def best_confidence(self, gray):
        """The highest confidence of any face the CNN finds in ``gray`` (no size limit), or None if it finds none."""
        return max((d.confidence for d in self._detector()(np.ascontiguousarray(gray), 0)), default=None)

    def _detect_many(self, grays):
        # The CNN runs a list of same-sized images as one batch (video frames).
        if len(grays) > 1 and len({g.shape for g in grays}) == 1:
            out = []
            for start in range(0, len(grays), self.batch_size):
                out += [self._boxes(found) for found in self._detector()(grays[start : start + self.batch_size], 0)]
            return out
        return [self._detect(gray) for gray in grays]


class DlibVerifiedDetector(DlibHogDetector):
    """dlib-hog's candidates at a permissive threshold, each kept only if dlib's CNN confirms it.

    dlib-hog run at ``proposal_threshold`` (below its usual 0) finds more of
    the tilted, covered and small faces, and more false faces; each candidate
    is then cut out with ``margin`` face widths around it, resized so the face
    is ``check_width`` pixels wide, and searched by the MMOD CNN; the
    candidate stays when the CNN finds a face there with confidence of at
    least ``min_confidence``.  The CNN sees a few small crops instead of the
    whole enlarged image, so it costs a fraction of ``dlib-cnn``.  The box
    returned is dlib-hog's (the box dlib's 5-point model was trained on), the
    score the CNN's confidence.

    On the photos of ``benchmarks/bench_detectors.py`` (87 faces, 117 images,
    min face 48 px) this found 70 faces with 1 false face (a line drawing of a
    face), against 56 faces and 9 false faces for dlib-hog and 79 faces and
    the same 1 false face for dlib-cnn on the whole image, which took about
    40 times as long; the thresholds were chosen there.
    """

    name = "dlib-verified"
    proposal_threshold = -0.6
    check_width = 100
    margin = 0.5
    min_confidence = 0.0

    def _confirmation(self, gray, left, top, width, height):
        import cv2

        pad = int(round(self.margin * width))
        x0, y0 = max(left - pad, 0), max(top - pad, 0)
        x1, y1 = min(left + width + pad, gray.shape[1]), min(top + height + pad, gray.shape[0])
        scale = self.check_width / float(max(width, 1))
        crop = cv2.resize(gray[y0:y1, x0:x1], None, fx=scale, fy=scale,
                          interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return get_detector("dlib-cnn").best_confidence(crop)

    def _detect(self, gray):
        rects, _, _ = self._detector().run(gray, 0, self.proposal_threshold)
        out = []
        for r in rects:
            confidence = self._confirmation(gray, r.left(), r.top(), r.width(), r.height())
            if confidence is not None and confidence >= self.min_confidence:
                out.append((r.left(), r.top(), r.width(), r.height(), confidence))
        return out


DETECTORS = {
    "haar": HaarDetector,
    "dlib-hog": DlibHogDetector,
    "dlib-cnn": DlibCnnDetector,
    "dlib-verified": DlibVerifiedDetector,
}
# Chosen by benchmarks/bench_detectors.py: dlib-verified misses fewer faces
# than dlib-hog and reports almost no false ones, at a few times its cost
# (dlib-cnn misses fewer still but is tens of times slower).
DEFAULT_DETECTOR = "dlib-verified"


def get_detector(name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """The detector registered as ``name``; one instance per process (its model loads on first use)."""
    key = str(name).lower()
    if key not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose from {', '.join(DETECTORS)}")
    if ("instance", key) not in _MODELS:
        _MODELS[("instance", key)] = DETECTORS[key]()
    return _MODELS[("instance", key)]


# --------------------------------------------------------------------------- alignment


def five_landmarks(image, box, *, detector: FaceDetector | None = None) -> np.ndarray:
    """dlib's five points (x, y) of the face in ``box`` = (x, y, w, h), in image pixels.

    The box is first mapped into the frame dlib's 5-point model was trained on
    (dlib-hog's boxes), using ``detector.landmark_box``.
    """
    dlib = _dlib()
    gray = to_gray(image)
    x, y, w, h = (float(v) for v in box[:4])
    dx, dy, size = detector.landmark_box if detector is not None else (0.0, 0.0, 1.0)
    left, top = x + dx * w, y + dy * h
    right, bottom = left + size * w, top + size * h
    rect = dlib.rectangle(int(round(left)), int(round(top)), int(round(right)) - 1, int(round(bottom)) - 1)
    shape = five_point_predictor()(gray, rect)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def alignment_matrix(landmarks, *, size: int = FACE_SIZE, template=FER2013_FIVE_POINTS) -> tuple:
    """The 2x3 similarity transform from image pixels to an aligned ``size`` x ``size`` face.

    Its rotation levels the eye line; its scale and shift are the least-squares
    fit of the five ``landmarks`` to ``template`` (given for a 48x48 face and
    scaled to ``size``) under that rotation.  Returns ``(matrix, roll_degrees)``.
    """
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    target = np.asarray(template, dtype=np.float64) * (size / FACE_SIZE)
    # dlib's points 0-1 are the image-right eye, 2-3 the image-left eye.
    right_eye, left_eye = points[0:2].mean(axis=0), points[2:4].mean(axis=0)
    dx, dy = right_eye - left_eye
    roll = math.atan2(dy, dx)
    cos, sin = math.cos(-roll), math.sin(-roll)
    rotation = np.array([[cos, -sin], [sin, cos]])
    centred = points - points.mean(axis=0)
    rotated = centred @ rotation.T
    target_centred = target - target.mean(axis=0)
    scale = float((rotated * target_centred).sum() / max((centred**2).sum(), 1e-12))
    linear = scale * rotation
    shift = target.mean(axis=0) - linear @ points.mean(axis=0)
    return np.hstack([linear, shift[:, None]]), math.degrees(roll)


def warp_face(image, matrix, *, size: int = FACE_SIZE) -> np.ndarray:
    """Apply ``matrix`` (from :func:`alignment_matrix`) to cut a ``size`` x ``size`` gray face.

    A face much larger than ``size`` is first shrunk with area averaging, so the
    small crop does not alias as a plain bilinear warp would.
    """
    import cv2

    gray = to_gray(image)
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if scale < 0.8:
        # Cut the region the crop comes from (plus a pixel), shrink it by
        # ``scale`` with INTER_AREA, and warp what is left: a pure rotation.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [size, 0, 1], [0, size, 1], [size, size, 1]], dtype=np.float64) @ inverse.T
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        height, width = gray.shape
        region = gray[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
        if region.size:
            region = cv2.copyMakeBorder(
                region, max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0), cv2.BORDER_REPLICATE
            )
            small = cv2.resize(region, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            # Coordinates in the shrunken region: p_small = scale * (p - (x0, y0)).
            to_region = np.array([[scale, 0, -scale * x0], [0, scale, -scale * y0], [0, 0, 1]])
            matrix = matrix @ np.linalg.inv(to_region)
            gray = small
    return cv2.warpAffine(gray, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_face(image, landmarks, *, size: int = FACE_SIZE) -> np.ndarray:
    """The aligned ``size`` x ``size`` uint8 gray face for five dlib ``landmarks``."""
    matrix, _ = alignment_matrix(landmarks, size=size)
    return warp_face(image, matrix, size=size)


# --------------------------------------------------------------------------- one call


def find_faces(image, *, detector: str = DEFAULT_DETECTOR, min_face: int = DEFAULT_MIN_FACE,
               max_side: int = DEFAULT_MAX_SIDE) -> list:
    """Every face in ``image`` (gray, BGR or BGRA), aligned and cropped to 48x48.

    Parameters
    ----------
    image : ndarray
        The photo or video frame, as OpenCV decodes it.
    detector : {"haar", "dlib-hog", "dlib-cnn"}
        Registry name of the face detector.
    min_face : int
        Smallest face to report, as the detector's box width in pixels.
    max_side : int
        Longest side of the image the detector searches; larger images are
        searched downscaled (so their smallest findable face grows).

    Returns
    -------
    list of Face
        Left to right.
    """
    return find_faces_many([image], detector=detector, min_face=min_face, max_side=max_side)[0]


def find_faces_many(images, *, detector: str = DEFAULT_DETECTOR, min_face: int = DEFAULT_MIN_FACE,
                    max_side: int = DEFAULT_MAX_SIDE) -> list:
    """:func:`find_faces` on a list of images (e.g. a batch of video frames); one list of faces per image."""
    finder = get_detector(detector)
    grays = [to_gray(image) for image in images]
    return [aligned_faces(gray, boxes, finder)
            for gray, boxes in zip(grays, finder.detect_many(grays, min_face=min_face, max_side=max_side))]


def aligned_faces(gray, boxes, finder: FaceDetector) -> list:
    """A :class:`Face` for each ``(x, y, w, h, score)`` box of ``gray``: landmarks, roll and aligned crop."""
    faces = []
    for x, y, w, h, score in boxes:
        points = five_landmarks(gray, (x, y, w, h), detector=finder)
        matrix, roll = alignment_matrix(points)
        faces.append(Face(box=(x, y, w, h), score=score, landmarks=points, roll=roll, crop=warp_face(gray, matrix)))
    return faces

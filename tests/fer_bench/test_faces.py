"""Face detection, alignment and cropping on real photos shipped with scikit-image and matplotlib."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")

from fer_bench import faces as F  # noqa: E402
from fer_bench.tracking import FaceTracker, _overlap  # noqa: E402

# Face centres and widths read off the photos by eye (and from the annotated
# output, checked by looking at it): NASA's portrait of Eileen Collins
# (skimage.data.astronaut, 512x512) and Grace Hopper (matplotlib sample data, 512x600).
ASTRONAUT_FACE = {"centre": (222, 120), "width": (70, 130)}
HOPPER_FACE = {"centre": (267, 228), "width": (150, 260)}


def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def hopper() -> np.ndarray:
    import matplotlib

    image = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    assert image is not None
    return image


def matches(box, known, *, scale=1.0, offset=(0, 0), tolerance=0.3) -> bool:
    """Whether box (x, y, w, h) is the known face: centre within ``tolerance`` widths, width in range."""
    x, y, w, h = box[:4]
    cx, cy = known["centre"][0] * scale + offset[0], known["centre"][1] * scale + offset[1]
    low, high = known["width"][0] * scale, known["width"][1] * scale
    return math.hypot(x + w / 2 - cx, y + h / 2 - cy) < tolerance * w and low <= w <= high


def eye_line_degrees(crop: np.ndarray) -> float:
    """Roll of a 48x48 face measured afresh: enlarge, detect with dlib-hog, 5 landmarks, angle of the eye line."""
    big = cv2.copyMakeBorder(cv2.resize(crop, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC),
                             48, 48, 48, 48, cv2.BORDER_REPLICATE)
    boxes = F.get_detector("dlib-hog").detect(big, min_face=80)
    assert len(boxes) == 1
    points = F.five_landmarks(big, boxes[0][:4])
    dx, dy = points[0:2].mean(axis=0) - points[2:4].mean(axis=0)
    return math.degrees(math.atan2(dy, dx))


# --------------------------------------------------------------------------- detectors


@pytest.mark.parametrize("name", ["haar", "dlib-hog", "dlib-verified"])
@pytest.mark.parametrize("photo, known", [(astronaut, ASTRONAUT_FACE), (hopper, HOPPER_FACE)], ids=["astronaut", "hopper"])
def test_detectors_find_the_face_in_real_photos(name, photo, known):
    boxes = F.get_detector(name).detect(photo(), min_face=80)
    assert len(boxes) == 1
    assert matches(boxes[0], known), boxes


def test_cnn_detector_finds_the_face():
    # A 200x200 cut around the face keeps the CNN to a fraction of a second on a CPU.
    image = astronaut()[40:240, 120:320]
    boxes = F.get_detector("dlib-cnn").detect(image, min_face=80)
    assert len(boxes) == 1
    assert matches(boxes[0], ASTRONAUT_FACE, offset=(-120, -40)), boxes
    assert boxes[0][4] > 0.5  # the CNN's confidence


def test_cnn_detector_runs_same_sized_frames_as_one_batch():
    face = astronaut()[40:240, 120:320]
    frames = [face, np.ascontiguousarray(face[:, ::-1]), np.full_like(face, 128)]
    found = F.get_detector("dlib-cnn").detect_many(frames, min_face=80)
    assert [len(boxes) for boxes in found] == [1, 1, 0]
    x, y, w, h, _ = found[1][0]
    assert matches((200 - x - w, y, w, h), ASTRONAUT_FACE, offset=(-120, -40))  # the mirror image's face


def test_registry_and_unknown_detector():
    assert set(F.DETECTORS) == {"haar", "dlib-hog", "dlib-cnn", "dlib-verified"}
    assert F.DEFAULT_DETECTOR in F.DETECTORS
    assert F.get_detector("dlib-hog") is F.get_detector("DLIB-HOG")  # one instance per process
    with pytest.raises(ValueError, match="unknown face detector 'mtcnn'; choose from haar, dlib-hog, dlib-cnn, dlib-verified"):
        F.get_detector("mtcnn")


def test_default_detector_reports_no_false_face_where_dlib_hog_does():
    # dlib-hog alone finds a second, false face low on the astronaut's suit
    # and one on a scatter chart; the default confirms each candidate with the CNN.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    rng = np.random.default_rng(1)
    rng.uniform(size=7), rng.normal(size=(100, 3))  # the scatter chart of benchmarks/bench_detectors.py
    ax.scatter(*rng.normal(size=(2, 200)), c=rng.uniform(size=200))
    fig.canvas.draw()
    chart = cv2.cvtColor(np.asarray(fig.canvas.buffer_rgba())[..., :3], cv2.COLOR_RGB2GRAY)
    plt.close(fig)
    assert F.DEFAULT_DETECTOR == "dlib-verified"
    hog, default = F.get_detector("dlib-hog"), F.get_detector()
    assert len(hog.detect(astronaut())) == 2 and len(hog.detect(chart)) == 1
    found = default.detect(astronaut())
    assert len(found) == 1 and matches(found[0], ASTRONAUT_FACE)
    assert default.detect(chart) == []


def test_default_detector_finds_faces_dlib_hog_misses():
    # The cameraman (turned, in shadow) and the astronaut with a dark bar over her eyes.
    from skimage import data

    covered = astronaut().copy()
    covered[80:105, 172:272] = 20
    cameraman = {"centre": (235, 155), "width": (45, 100)}
    for image, known in ((data.camera(), cameraman), (covered, ASTRONAUT_FACE)):
        assert not any(matches(b, known) for b in F.get_detector("dlib-hog").detect(image))
        found = F.get_detector().detect(image)
        assert len(found) == 1 and matches(found[0], known), found


def test_no_face_in_a_photo_without_one():
    from skimage import data

    coffee = cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR)
    assert F.find_faces(coffee) == []
    assert F.find_faces(np.full((300, 400), 128, np.uint8), detector="haar") == []


def test_min_face_filters_small_faces():
    small = cv2.resize(hopper(), None, fx=0.4, fy=0.4, interpolation=cv2.INTER_AREA)  # face about 80 px
    assert len(F.find_faces(small, min_face=48)) == 1
    assert F.find_faces(small, min_face=120) == []
    with pytest.raises(ValueError, match="min_face=0; must be at least 1 pixel"):
        F.find_faces(small, min_face=0)


def test_detection_scale_enlarges_for_small_faces_and_caps_huge_images():
    hog = F.get_detector("dlib-hog")
    assert hog.detection_scale((480, 640), min_face=40) == pytest.approx(2.0)
    assert hog.detection_scale((480, 640), min_face=160) == pytest.approx(0.5)
    assert hog.detection_scale((6000, 8000), min_face=48, max_side=2000) == pytest.approx(0.25)
    assert hog.effective_min_face((6000, 8000), min_face=48, max_side=2000) == 320
    assert hog.effective_min_face((480, 640), min_face=48) == 48


def test_huge_photo_is_searched_downscaled_and_boxes_come_back_in_original_pixels():
    big = cv2.resize(hopper(), None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR)  # 2560x3000
    faces = F.find_faces(big, detector="dlib-hog", max_side=800)
    assert len(faces) == 1
    assert matches(faces[0].box, HOPPER_FACE, scale=5), faces[0].box
    x, y, w, h = faces[0].box
    assert 0 <= x and x + w <= big.shape[1] and 0 <= y and y + h <= big.shape[0]


# --------------------------------------------------------------------------- alignment and crop


@pytest.mark.parametrize("image", [
    pytest.param(lambda: astronaut(), id="bgr"),
    pytest.param(lambda: cv2.cvtColor(astronaut(), cv2.COLOR_BGR2GRAY), id="gray"),
    pytest.param(lambda: cv2.cvtColor(astronaut(), cv2.COLOR_BGR2BGRA), id="bgra"),
    pytest.param(lambda: astronaut().astype(np.float32) / 255, id="float"),
])
def test_crop_shape_dtype_and_landmarks(image):
    # The float photo, stretched to 0-255, also gets a marginal dlib-hog hit
    # (score near 0) on the mission patch; the face is the one that matters here.
    faces = [face for face in F.find_faces(image(), min_face=80) if matches(face.box, ASTRONAUT_FACE)]
    assert len(faces) == 1
    face = faces[0]
    assert face.crop.shape == (48, 48) and face.crop.dtype == np.uint8
    assert face.landmarks.shape == (5, 2)
    x, y, w, h = face.box
    # Both eyes and the nose base lie inside the detector's box.
    assert np.all((face.landmarks[:, 0] > x) & (face.landmarks[:, 0] < x + w))
    assert np.all((face.landmarks[:, 1] > y) & (face.landmarks[:, 1] < y + h))
    assert face.crop.std() > 20  # a face, not a flat patch


@pytest.mark.parametrize("degrees", [-20, 18])
def test_alignment_turns_a_tilted_face_upright(degrees):
    image = astronaut()
    upright = F.find_faces(image, min_face=80)[0]
    tilt = cv2.getRotationMatrix2D((222.0, 122.0), degrees, 1.0)  # counter-clockwise for positive degrees
    tilted = cv2.warpAffine(image, tilt, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    # The face turns about its own centre, so it stays where it was.  (dlib-hog
    # also takes the tilted mission patch on the suit for a face, score 0.26.)
    faces = [face for face in F.find_faces(tilted, min_face=80) if matches(face.box, ASTRONAUT_FACE)]
    assert len(faces) == 1
    # The roll measured is the photo's own plus the tilt (image y points down).
    assert faces[0].roll == pytest.approx(upright.roll - degrees, abs=3)
    # Measured afresh on the aligned crop, the eye line is level ...
    assert abs(eye_line_degrees(faces[0].crop)) < 4
    # ... whereas a crop that is not rotated keeps the tilt.
    matrix, _ = F.alignment_matrix(faces[0].landmarks)
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    unrotated = matrix.copy()
    unrotated[:, :2] = np.eye(2) * scale
    unrotated[:, 2] += (matrix[:, :2] - unrotated[:, :2]) @ faces[0].landmarks.mean(axis=0)
    assert abs(eye_line_degrees(F.warp_face(tilted, unrotated))) > 10
    # And the aligned crop of the tilted photo looks like that of the upright one.
    assert np.corrcoef(faces[0].crop.ravel().astype(float), upright.crop.ravel().astype(float))[0, 1] > 0.9


def test_alignment_matrix_maps_landmarks_onto_the_template():
    # Template points rotated by 30 degrees, scaled 3x and shifted: the fit undoes all three.
    theta = math.radians(30)
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = F.FER2013_FIVE_POINTS @ rotation.T * 3 + [200, 100]
    matrix, roll = F.alignment_matrix(points)
    assert roll == pytest.approx(30)
    mapped = np.c_[points, np.ones(5)] @ matrix.T
    np.testing.assert_allclose(mapped, F.FER2013_FIVE_POINTS, atol=1e-9)
    # A 96-pixel crop is the same frame, twice as large.
    matrix96, _ = F.alignment_matrix(points, size=96)
    np.testing.assert_allclose(np.c_[points, np.ones(5)] @ matrix96.T, F.FER2013_FIVE_POINTS * 2, atol=1e-9)


def test_warp_face_shrinks_large_faces_without_aliasing():
    # A fine stripe pattern, 10x larger than the crop: area averaging turns it to flat gray,
    # a plain bilinear warp would keep a moire of full-contrast stripes.
    stripes = np.zeros((600, 600), np.uint8)
    stripes[:, ::2] = 255
    matrix = np.array([[0.08, 0, 0], [0, 0.08, 0]], dtype=np.float64)
    crop = F.warp_face(stripes, matrix)
    assert crop.shape == (48, 48)
    assert crop.std() < 10 and abs(float(crop.mean()) - 127.5) < 10


def test_crops_frame_a_face_as_fer2013_does(fer2013):
    """FER-2013 faces, enlarged and pasted into a larger picture, come back framed as in FER-2013.

    The template margin should reproduce the original crops better than a
    looser or a tighter framing does.
    """
    rng = np.random.default_rng(0)
    X = fer2013.test.X[rng.choice(len(fer2013.test.y), 60, replace=False)]

    def corr(a, b):
        return np.corrcoef(a.ravel().astype(float), b.ravel().astype(float))[0, 1]

    scores = {0.8: [], 1.0: [], 1.25: []}
    for face in X:
        canvas = cv2.copyMakeBorder(cv2.resize(face, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC),
                                    100, 100, 100, 100, cv2.BORDER_REPLICATE)
        found = F.find_faces(canvas, min_face=80)
        if len(found) != 1:
            continue  # dlib-hog misses about a third of FER-2013's hard faces
        for factor in scores:
            template = (F.FER2013_FIVE_POINTS - 23.5) * factor + 23.5
            matrix, _ = F.alignment_matrix(found[0].landmarks, template=template)
            scores[factor].append(corr(F.warp_face(canvas, matrix), face))
    assert len(scores[1.0]) >= 30
    assert np.median(scores[1.0]) > 0.6
    assert np.mean(scores[1.0]) > np.mean(scores[0.8]) + 0.03
    assert np.mean(scores[1.0]) > np.mean(scores[1.25]) + 0.03


def test_faces_module_does_not_import_keras_or_tensorflow():
    import subprocess
    import sys

    code = ("import sys, cv2, numpy as np; from fer_bench import faces; "
            "faces.find_faces(np.zeros((100, 100), np.uint8)); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def gliding_frames(n=12, step=6):
    """640x480 frames of the astronaut's face moving right ``step`` pixels a frame; one empty frame first."""
    cut = cv2.resize(astronaut()[20:240, 110:330], (170, 170), interpolation=cv2.INTER_AREA)
    frames = [np.full((480, 640, 3), 140, np.uint8)]
    for i in range(n):
        frame = np.full((480, 640, 3), 140, np.uint8)
        frame[60:230, 40 + step * i : 210 + step * i] = cut
        frames.append(frame)
    return frames


@pytest.mark.parametrize("name", ["haar", "dlib-hog"])
def test_tracker_follows_a_moving_face_between_full_searches(name):
    frames = gliding_frames()
    tracker = FaceTracker(name, redetect=4)
    found = tracker.find_many(frames)
    assert found[0] == []  # the empty frame: searched in full, nothing there
    full = F.find_faces_many(frames, detector=name)
    for i, (faces, reference) in enumerate(zip(found[1:], full[1:])):
        assert len(faces) == 1 and len(reference) == 1, i
        box, expected = faces[0].box, reference[0].box
        # Same face, in the same place as the full search puts it.
        assert _overlap(box, expected) > 0.6, (i, box, expected)
        assert faces[0].crop.shape == (48, 48)
    # The empty frame, then the face's first frame (nothing to follow), then every 4th.
    assert tracker.full_searches == 4
    assert [f[0].box for f in found[1:2]] == [f[0].box for f in full[1:2]]


def test_tracker_with_redetect_1_is_the_full_search():
    frames = gliding_frames(4)
    tracker = FaceTracker("haar")
    found = tracker.find_many(frames)
    assert tracker.full_searches == len(frames)
    assert [[face.box for face in faces] for faces in found] == \
        [[face.box for face in faces] for faces in F.find_faces_many(frames, detector="haar")]


def test_tracker_drops_a_face_that_leaves_and_finds_it_at_the_next_full_search():
    frames = gliding_frames(3)
    empty = frames[0]
    tracker = FaceTracker("haar", redetect=10)
    assert len(tracker.find(frames[1])) == 1
    assert tracker.find(empty) == []  # lost in its window: dropped, not invented
    assert len(tracker.find(frames[2])) == 1  # nothing to follow: the whole frame is searched
    assert tracker.full_searches == 2


def test_tracker_rejects_redetect_below_1():
    with pytest.raises(ValueError, match="redetect=0"):
        FaceTracker("haar", redetect=0)

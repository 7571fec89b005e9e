"""``fer-bench predict`` and fer_bench.predict: photos, folders, video, camera, bad input, no TensorFlow."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

cv2 = pytest.importorskip("cv2")
pytest.importorskip("dlib")

from fer_bench import predict as P  # noqa: E402
from fer_bench.cli import cli  # noqa: E402
from fer_bench.face_records import VALENCE_COLOURS  # noqa: E402
from fer_classic.model import ClassicModel  # noqa: E402
from conftest import synthetic_faces  # noqa: E402

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
# Face centres in the photos, read off them by eye (see tests/fer_classic/test_faces.py).
ASTRONAUT_CENTRE, HOPPER_CENTRE = (222, 120), (267, 228)


def astronaut() -> np.ndarray:
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


def hopper() -> np.ndarray:
    import matplotlib

    return cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))


def centre(box):
    x, y, w, h = box
    return x + w / 2, y + h / 2


def near(box, point, tolerance=30) -> bool:
    return math.dist(centre(box), point) < tolerance


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    """A tiny HOG + SVM model on synthetic faces: its labels are meaningless, its interface is real."""
    X, y = synthetic_faces(140, seed=1)
    model = ClassicModel("hog", "svm", classifier_params={"pca_components": 20}).fit(X, y)
    return model.save(tmp_path_factory.mktemp("model") / "tiny.skops")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """A folder of real photos: two portraits, both side by side in one picture, and one without a face."""
    from skimage import data

    root = tmp_path_factory.mktemp("photos")
    cv2.imwrite(str(root / "astronaut.png"), astronaut())
    sub = root / "more"
    sub.mkdir()
    cv2.imwrite(str(sub / "hopper.jpg"), hopper())
    pair = np.full((700, 1200, 3), 200, np.uint8)
    pair[50:562, 40:552] = astronaut()
    pair[60:660, 640:1152] = hopper()
    cv2.imwrite(str(sub / "pair.png"), pair)
    cv2.imwrite(str(root / "coffee.jpg"), cv2.cvtColor(data.coffee(), cv2.COLOR_RGB2BGR))
    (root / "README.txt").write_text("not a photo; skipped inside folders\n")
    return root


def run_predict(*args):
    result = CliRunner().invoke(cli, ["predict", *map(str, args)], catch_exceptions=False)
    return result


def records_of(text: str) -> list:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_video(path: Path, *, seconds: float = 2.0, fps: int = 10, size=(320, 240)) -> list:
    """A real face (the astronaut's) gliding left to right over a gray background; returns its boxes."""
    face = cv2.resize(astronaut()[30:230, 120:320], (160, 160), interpolation=cv2.INTER_AREA)  # face ~70 px
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    lefts = []
    n = int(round(seconds * fps))
    for i in range(n):
        frame = np.full((size[1], size[0], 3), 150, np.uint8)
        left = 5 + int(i * (size[0] - 170) / max(n - 1, 1))
        frame[40:200, left : left + 160] = face
        writer.write(frame)
        lefts.append(left)
    writer.release()
    return lefts


# --------------------------------------------------------------------------- photos and folders


def test_predict_folder_json_lines(model_path, photos):
    result = run_predict(model_path, photos, "--min-face", 80)
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    by_file = {}
    for record in records:
        assert set(record) == set(P.RECORD_FIELDS)
        by_file.setdefault(Path(record["file"]).name, []).append(record)
    # Recursive, sorted, README.txt skipped; every photo has at least one record.
    assert sorted(by_file) == ["astronaut.png", "coffee.jpg", "hopper.jpg", "pair.png"]
    [astro] = by_file["astronaut.png"]
    assert near(astro["box"], ASTRONAUT_CENTRE)
    [grace] = by_file["hopper.jpg"]
    assert near(grace["box"], HOPPER_CENTRE, 40)
    # Two faces, left to right, at their offsets in the composite picture.
    left, right = by_file["pair.png"]
    assert (left["face"], right["face"]) == (0, 1)
    assert near(left["box"], (ASTRONAUT_CENTRE[0] + 40, ASTRONAUT_CENTRE[1] + 50))
    assert near(right["box"], (HOPPER_CENTRE[0] + 640, HOPPER_CENTRE[1] + 60), 40)
    for record in (astro, grace, left, right):
        assert record["frame"] is None and record["time"] is None and record["reason"] is None
        assert list(record["probabilities"]) == list(CLASSES)
        assert sum(record["probabilities"].values()) == pytest.approx(1, abs=1e-3)
        assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)
        assert record["valence"] == P.VALENCE[record["label"]]
    [none] = by_file["coffee.jpg"]
    assert none["face"] is None and none["box"] is None and none["label"] is None and none["probabilities"] is None
    assert none["reason"] == "no face found by dlib-verified (faces at least 80 px wide)"
    assert "4 face(s) in 4 of 4 input(s)" in result.stderr


def test_valence_groups():
    assert P.VALENCE == {"happy": "positive", "surprise": "positive", "neutral": "neutral", "angry": "negative",
                         "disgust": "negative", "fear": "negative", "sad": "negative"}


@pytest.mark.parametrize("detector", ["haar", "dlib-hog"])
def test_detector_option(model_path, photos, detector):
    result = run_predict(model_path, photos / "astronaut.png", "--detector", detector, "--min-face", 80)
    assert result.exit_code == 0, result.output
    [record] = records_of(result.stdout)
    assert near(record["box"], ASTRONAUT_CENTRE)


def test_min_face_option(model_path, photos):
    result = run_predict(model_path, photos / "astronaut.png", "--min-face", 150)
    [record] = records_of(result.stdout)
    assert record["face"] is None and "at least 150 px" in record["reason"]
    result = run_predict(model_path, photos / "astronaut.png", "--detector", "yolo")
    assert result.exit_code == 1
    assert "'yolo' is not one of 'haar', 'dlib-hog', 'dlib-cnn', 'dlib-verified'" in result.stderr


def test_json_and_csv_files(model_path, photos, tmp_path):
    out_json, out_csv = tmp_path / "faces.jsonl", tmp_path / "faces.csv"
    result = run_predict(model_path, photos / "more", "--min-face", 80, "--json", out_json, "--csv", out_csv)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""  # records went to the files
    records = records_of(out_json.read_text())
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["file", "frame", "time", "face", "x", "y", "w", "h", "label", "valence",
                             *[f"p_{name}" for name in CLASSES], "reason"]
    assert len(rows) == len(records) == 3
    for row, record in zip(rows, records):
        assert [int(row[k]) for k in "xywh"] == record["box"]
        assert row["label"] == record["label"]
        assert float(row[f"p_{record['label']}"]) == pytest.approx(record["probabilities"][record["label"]])
    # CSV alone: nothing on stdout either.
    result = run_predict(model_path, photos / "coffee.jpg", "--csv", out_csv)
    assert result.stdout == ""
    with open(out_csv, newline="") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["face"] == "" and row["label"] == "" and row["reason"].startswith("no face found")


def test_annotated_photo_shows_the_boxes_in_place(model_path, photos, tmp_path):
    result = run_predict(model_path, photos, "--min-face", 80, "--annotate", tmp_path / "ann")
    assert result.exit_code == 0, result.output
    records = [r for r in records_of(result.stdout) if Path(r["file"]).name == "pair.png"]
    original = cv2.imread(str(photos / "more" / "pair.png"))
    drawn = cv2.imread(str(tmp_path / "ann" / photos.name / "more" / "pair.png"))
    assert drawn.shape == original.shape
    assert (tmp_path / "ann" / photos.name / "astronaut.png").is_file()
    assert (tmp_path / "ann" / photos.name / "coffee.jpg").is_file()  # drawn on too, with nothing to draw
    changed = np.any(drawn.astype(int) != original, axis=2)
    for record in records:
        x, y, w, h = record["box"]
        colour = np.array(VALENCE_COLOURS[record["valence"]])
        # The box outline is drawn in the valence colour along all four edges ...
        for edge in (drawn[y + h // 2, x], drawn[y + h // 2, x + w - 1], drawn[y + h - 1, x + w // 2]):
            assert np.abs(edge.astype(int) - colour).max() <= 2
        # ... and the face inside is left alone.
        assert not changed[y + h // 4 : y + 3 * h // 4, x + w // 4 : x + 3 * w // 4].any()
    # Far from both faces nothing changed.
    assert not changed[600:, :600].any()


# --------------------------------------------------------------------------- video


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "glide.mp4"
    return path, write_video(path)


def test_video_one_record_per_face_per_processed_frame(model_path, video, tmp_path):
    path, lefts = video
    result = run_predict(model_path, path, "--batch", 8, "--annotate", tmp_path / "ann")
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    assert [r["frame"] for r in records] == list(range(20))
    assert all(r["face"] == 0 for r in records)
    assert [r["time"] for r in records] == pytest.approx([i / 10 for i in range(20)])
    for record, left in zip(records, lefts):
        # The face centre (222, 120) in the photo is (102, 90) in the cut, scaled by 160/200.
        assert near(record["box"], (left + 102 * 0.8, 40 + 90 * 0.8), 15)
    assert "20 video frame(s) processed" in result.stderr
    annotated = cv2.VideoCapture(str(tmp_path / "ann" / "glide.mp4"))
    assert annotated.isOpened()
    assert int(annotated.get(cv2.CAP_PROP_FRAME_COUNT)) == 20
    assert annotated.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    frames = 0
    while annotated.read()[0]:
        frames += 1
    assert frames == 20


def test_video_every_and_max_frames(model_path, video):
    path, _ = video
    result = run_predict(model_path, path, "--every", 3, "--batch", 2, "--max-frames", 15)
    records = records_of(result.stdout)
    assert [r["frame"] for r in records] == [0, 3, 6, 9, 12]
    assert [r["time"] for r in records] == pytest.approx([0, 0.3, 0.6, 0.9, 1.2])


def test_ctrl_c_keeps_what_was_written(model_path, video, tmp_path):
    path, _ = video
    seen = []

    def emit(record):
        seen.append(record)
        if len(seen) == 5:
            raise KeyboardInterrupt

    counts = P.predict_inputs(ClassicModel.load(model_path), [path], options=P.PredictOptions(batch_size=4),
                              annotate_dir=tmp_path, emit=emit)
    assert counts["interrupted"] and len(seen) == 5
    annotated = cv2.VideoCapture(str(tmp_path / "glide.mp4"))
    assert annotated.isOpened() and annotated.read()[0]  # closed properly: it plays up to the interruption


def test_video_frames_without_a_face_get_a_record(model_path, tmp_path):
    path = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for _ in range(4):
        writer.write(np.full((120, 160, 3), 90, np.uint8))
    writer.release()
    result = run_predict(model_path, path)
    records = records_of(result.stdout)
    assert [(r["frame"], r["face"]) for r in records] == [(0, None), (1, None), (2, None), (3, None)]
    assert all(r["reason"].startswith("no face found by dlib-verified") for r in records)


def test_camera_is_read_live_one_frame_at_a_time(model_path, video, monkeypatch):
    # No camera here: camera 0 is played from the test video instead.
    path, lefts = video
    open_capture = cv2.VideoCapture
    monkeypatch.setattr(cv2, "VideoCapture",
                        lambda source, *args: open_capture(str(path) if source == 0 else source, *args))
    result = run_predict(model_path, "--webcam", 0, "--max-frames", 5)
    assert result.exit_code == 0, result.output
    records = records_of(result.stdout)
    assert [(r["file"], r["frame"], r["face"]) for r in records] == [("camera:0", i, 0) for i in range(5)]
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] >= 0  # seconds since the camera opened
    for record, left in zip(records, lefts):
        assert near(record["box"], (left + 102 * 0.8, 40 + 90 * 0.8), 15)


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_are_reported_and_the_rest_goes_on(model_path, photos, tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a PNG" * 10)
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    broken_video = tmp_path / "broken.mp4"
    broken_video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    result = run_predict(model_path, empty, garbage, text, broken_video, tmp_path / "missing.jpg",
                         photos / "astronaut.png", "--min-face", 80)
    assert result.exit_code == 1
    [record] = records_of(result.stdout)  # the good photo still went through
    assert near(record["box"], ASTRONAUT_CENTRE)
    errors = [line for line in result.stderr.splitlines() if line.startswith("fer-bench: error:")]
    assert errors == [
        f"fer-bench: error: {empty}: empty file (0 bytes)",
        f"fer-bench: error: {garbage}: not an image OpenCV can decode (corrupt, truncated or another kind of file)",
        f"fer-bench: error: {text}: neither an image nor a video OpenCV can decode",
        f"fer-bench: error: {broken_video}: the video could not be opened (damaged, or a codec OpenCV's FFmpeg lacks)",
        f"fer-bench: error: {tmp_path / 'missing.jpg'}: no such file or folder",
    ]
    assert "fer-bench: 5 input(s) failed" in result.stderr
    assert "Traceback" not in result.output


def test_input_errors_name_the_file(tmp_path):
    empty_video = tmp_path / "clip.mp4"
    empty_video.write_bytes(b"")
    with pytest.raises(P.InputError, match=r"clip\.mp4: empty file \(0 bytes\)"):
        P.open_video(empty_video)
    with pytest.raises(P.InputError, match=r"nothing\.png: no such file or folder"):
        P.read_image(tmp_path / "nothing.png")
    with pytest.raises(P.InputError, match=r": a folder where a file was expected"):
        P.read_image(tmp_path)


def test_huge_photo_is_refused_with_its_size(model_path, tmp_path):
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.zeros((1500, 2000), np.uint8))
    with pytest.raises(P.InputError, match=r"big\.png: image too large \(2000x1500 = 3 megapixels; the limit is 2\)"):
        P.read_image(big, max_pixels=2_000_000)


def test_huge_photo_within_the_limit_is_searched_downscaled(model_path, tmp_path):
    path = tmp_path / "large.jpg"
    cv2.imwrite(str(path), cv2.resize(hopper(), None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR))  # 2560x3000
    result = run_predict(model_path, path, "--max-side", 800)
    assert result.exit_code == 0, result.output
    [record] = records_of(result.stdout)
    assert near(record["box"], (HOPPER_CENTRE[0] * 5, HOPPER_CENTRE[1] * 5), 150)  # in original pixels
    assert f"fer-bench: note: {path}: 2560x3000 pixels is searched downscaled (--max-side 800); " \
           "faces narrower than 300 px may be missed" in result.stderr


def test_missing_camera(model_path, photos):
    with pytest.raises(P.InputError, match=r"camera 99: could not be opened \(no such camera, in use, or no permission\)"):
        list(P.predict_camera(None, 99))
    result = run_predict(model_path, photos / "astronaut.png", "--webcam", 99, "--min-face", 80)
    assert result.exit_code == 1
    assert len(records_of(result.stdout)) == 1
    assert "fer-bench: error: camera 99: could not be opened" in result.stderr


def test_missing_or_foreign_model_is_one_line(photos, tmp_path):
    result = run_predict(tmp_path / "nope.joblib", photos / "astronaut.png")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"fer-bench: error: {tmp_path / 'nope.joblib'}: no such model file, nor a "
                                    f"shipped model's name (shipped: ")
    assert result.stderr.count("\n") == 1
    foreign = tmp_path / "photo.joblib"
    foreign.write_bytes((photos / "coffee.jpg").read_bytes())
    result = run_predict(foreign, photos / "astronaut.png")
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"fer-bench: error: {foreign}: not a fer-bench model file")


def test_no_input_is_a_usage_error(model_path):
    result = run_predict(model_path)
    assert result.exit_code == 1
    assert "give at least one PATH (photo, video or folder) or --webcam INDEX" in result.stderr


def test_annotation_never_overwrites_the_input(model_path, photos, tmp_path):
    photo = tmp_path / "astronaut.png"
    photo.write_bytes((photos / "astronaut.png").read_bytes())
    before = photo.read_bytes()
    result = run_predict(model_path, photo, "--min-face", 80, "--annotate", tmp_path)
    assert result.exit_code == 0, result.output
    assert photo.read_bytes() == before
    assert (tmp_path / "astronaut_annotated.png").is_file()


# --------------------------------------------------------------------------- CPU-only deploy


def test_predicting_with_a_classical_model_never_imports_tensorflow_or_keras(model_path, photos, tmp_path):
    report = tmp_path / "modules.json"
    code = f"""
import atexit, json, sys
def report():
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
    open({str(report)!r}, "w").write(json.dumps(loaded))
atexit.register(report)
sys.argv = ["fer-bench", "predict", {str(model_path)!r}, {str(photos / "astronaut.png")!r}, "--min-face", "80"]
from fer_bench.cli import main
main()
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [record] = records_of(done.stdout)
    assert near(record["box"], ASTRONAUT_CENTRE)
    assert json.loads(report.read_text()) == []


def test_video_with_redetect_follows_the_face_between_full_searches(model_path, video):
    path, lefts = video
    full = records_of(run_predict(model_path, path, "--detector", "haar").stdout)
    result = run_predict(model_path, path, "--detector", "haar", "--redetect", 5, "--batch", 3)
    assert result.exit_code == 0, result.output
    tracked = records_of(result.stdout)
    assert [r["frame"] for r in tracked] == list(range(20))
    assert all(r["face"] == 0 for r in tracked)
    for record, left in zip(tracked, lefts):
        assert near(record["box"], (left + 102 * 0.8, 40 + 90 * 0.8), 15)
    # The frames searched in full are the same as without --redetect.
    for frame in (0, 5, 10, 15):
        assert tracked[frame]["box"] == full[frame]["box"]
        assert tracked[frame]["label"] == full[frame]["label"]


def test_redetect_must_be_positive(model_path, video):
    result = run_predict(model_path, video[0], "--redetect", 0)
    assert result.exit_code == 1  # usage errors: one line, exit 1
    assert "--redetect" in result.stderr and result.stderr.count("\n") == 1

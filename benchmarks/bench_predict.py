"""Benchmark prediction speed: milliseconds per face and frames per second with each face detector.

For a saved classical model (and a CNN, if one is given and Keras is installed):

- **per face**: milliseconds per 48x48 face, features included, on one thread
  (``threadpoolctl.threadpool_limits(1)``, OpenCV one thread): one face at a
  time (median of ``--singles`` calls) and batched (``--batch`` faces in one call);
- **per frame**: frames per second on 640x480 frames built from real photos
  (the portraits shipped with scikit-image and matplotlib, and FER-2013 faces
  enlarged, when the data is there), for each detector (``haar``, ``dlib-hog``,
  ``dlib-cnn``), the whole pipeline: detection, 5-point alignment, crop, model;
- **video**: frames per second on a 10-second 640x480 video of two real faces
  moving (in memory), with the whole frame searched every N-th frame
  (``--redetect``, default 1, 5 and 10) and the faces followed in between
  (:class:`fer_bench.tracking.FaceTracker`);
- **reference**: if the ``fer`` package is importable, its emotion model on the
  same 48x48 faces and its whole pipeline (Haar detector + its CNN) on the same
  frames, in the same run;
- **video check** (``--video-check``): writes a 10-second 640x480 video of two
  real faces moving, runs :func:`fer_bench.predict.predict_video` on it with
  annotation, and checks one record per face per processed frame and the
  annotated video's frame count.

Run::

    python benchmarks/bench_predict.py MODEL [--cnn CNN_MODEL] [--data data/fer2013] [--video-check] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FRAME_SIZE = (640, 480)


# --------------------------------------------------------------------------- inputs


def portraits() -> list:
    """Real face photos shipped in installed packages: (name, BGR image)."""
    import cv2
    import matplotlib
    from skimage import data

    out = [("astronaut", cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))]
    hopper = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    if hopper is not None:
        out.append(("hopper", hopper))
    return out


def _paste(canvas, image, x, y):
    h = min(image.shape[0], canvas.shape[0] - y)
    w = min(image.shape[1], canvas.shape[1] - x)
    canvas[y : y + h, x : x + w] = image[:h, :w]


def make_frames(n: int = 12, *, fer_faces=None, seed: int = 0) -> list:
    """``n`` 640x480 BGR frames with one to three real faces each, at varied sizes and places.

    Frames alternate between one portrait scaled to a face of 80-200 px, the
    two portraits side by side, and (with ``fer_faces``) a portrait plus two
    FER-2013 faces enlarged 2-3x.  Returns ``[(frame, faces_placed), ...]``.
    """
    import cv2

    rng = np.random.default_rng(seed)
    photos = portraits()
    width, height = FRAME_SIZE
    frames = []
    for i in range(n):
        canvas = np.full((height, width, 3), int(rng.integers(90, 200)), np.uint8)
        kind = i % (3 if fer_faces is not None else 2)
        if kind == 0:
            _, photo = photos[i // 3 % len(photos)]
            scale = rng.uniform(0.6, 1.0) * height / photo.shape[0]
            small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            _paste(canvas, small, int(rng.integers(0, max(1, width - small.shape[1]))), 0)
            placed = 1
        elif kind == 1:
            for j, (_, photo) in enumerate(photos[:2]):
                scale = 0.45 * height / photo.shape[0] * rng.uniform(0.9, 1.1) * 2
                small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                small = small[:, : width // 2]
                _paste(canvas, small, j * width // 2, int(rng.integers(0, 40)))
            placed = len(photos[:2])
        else:
            _, photo = photos[0]
            small = cv2.resize(photo, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
            _paste(canvas, small, 0, 60)
            placed = 1
            for j in range(2):
                face = fer_faces[int(rng.integers(len(fer_faces)))]
                side = int(rng.integers(110, 145))  # 2.3-3x: FER-2013 faces are 48 px
                big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
                _paste(canvas, cv2.cvtColor(big, cv2.COLOR_GRAY2BGR), 340 + j * 150, 120 + j * 60)
                placed += 1
        frames.append((canvas, placed))
    return frames


def load_faces(data_path, n: int, seed: int = 0):
    """``n`` FER-2013 PrivateTest faces if the dataset is at ``data_path``, else aligned crops of the portraits."""
    if data_path is not None and Path(data_path).exists():
        from fer_bench.data import load_dataset

        cache = os.environ.get("FER_BENCH_CACHE")
        dataset = load_dataset(data_path, cache_dir=cache) if cache else load_dataset(data_path)
        rng = np.random.default_rng(seed)
        X = dataset.test.X
        return X[rng.choice(len(X), min(n, len(X)), replace=False)], "FER-2013 PrivateTest"
    from fer_bench.faces import find_faces

    crops = [face.crop for _, photo in portraits() for face in find_faces(photo, min_face=80)]
    reps = int(np.ceil(n / max(len(crops), 1)))
    return np.stack(crops * reps)[:n], "aligned crops of the sample portraits (FER-2013 not found)"


# --------------------------------------------------------------------------- timing


def one_thread():
    """Limit BLAS/OpenMP and OpenCV to one thread (returns the threadpoolctl context)."""
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(1)
    return threadpool_limits(1)


def limit_tensorflow_threads():
    """One TensorFlow thread, like the classical models under ``threadpool_limits(1)``.

    Must run before TensorFlow executes anything; later it is a no-op.  Only
    called when a CNN or the fer package is timed: the classical path never
    imports TensorFlow.
    """
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except (ImportError, RuntimeError):  # not installed, or already initialised in this process
        pass


def time_model_per_face(model, faces, *, batch: int = 500, singles: int = 100) -> dict:
    """Milliseconds per face of ``model.predict``, by the harness's timer (one thread): one face at a time
    (median) and batched."""
    from fer_bench.experiment.harness import time_prediction

    faces = np.asarray(faces)
    timing = time_prediction(model, faces, batch=batch, singles=singles)
    return {"ms_single": timing["predict_ms_single"], "ms_batched": timing["predict_ms_per_face"],
            "n_batched": len(faces[:batch])}


def time_pipeline(model, frames, detector: str, *, min_face: int = 48) -> dict:
    """Frames per second of detection + alignment + model on ``frames``, one frame at a time."""
    from fer_bench.faces import find_faces

    with one_thread():
        found = find_faces(frames[0][0], detector=detector, min_face=min_face)  # warm-up: loads the detector
        if found:
            model.predict_proba(np.stack([f.crop for f in found]))
        faces_found = faces_placed = 0
        start = time.perf_counter()
        for frame, placed in frames:
            found = find_faces(frame, detector=detector, min_face=min_face)
            if found:
                model.predict_proba(np.stack([f.crop for f in found]))
            faces_found += len(found)
            faces_placed += placed
        seconds = time.perf_counter() - start
    return {"fps": len(frames) / seconds, "ms_per_frame": 1000 * seconds / len(frames), "frames": len(frames),
            "faces_found": faces_found, "faces_placed": faces_placed}


def import_fer():
    """``(fer's FER class, None)``, or ``(None, why it cannot be used)``."""
    import importlib.util

    if importlib.util.find_spec("fer") is None:
        return None, "the fer package is not installed"
    try:
        from fer.fer import FER
    except Exception as error:  # its own imports failing: pkg_resources, TensorFlow, requests
        return None, f"fer is installed but cannot be imported: {type(error).__name__}: {error}"
    return FER, None


def fer_mosaic(bgr_faces, columns: int = 25):
    """48x48 BGR faces tiled in one picture, and each face's box: how ``fer`` classifies many faces in one call."""
    rows = -(-len(bgr_faces) // columns)
    picture = np.zeros((rows * 48, columns * 48, 3), np.uint8)
    boxes = []
    for i, image in enumerate(bgr_faces):
        r, c = divmod(i, columns)
        picture[r * 48 : (r + 1) * 48, c * 48 : (c + 1) * 48] = image
        boxes.append((c * 48, r * 48, 48, 48))
    return picture, boxes


def fer_reference(faces, frames, *, batch: int = 500, singles: int = 100, video_frames=None) -> dict:
    """Time the ``fer`` package (its default: Haar detector + its TFLite emotion CNN); ``{"error": ...}`` if absent."""
    FER, error = import_fer()
    if error:
        return {"error": error}
    import cv2

    limit_tensorflow_threads()
    detector = FER()
    faces = np.asarray(faces)
    bgr = [cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) for face in faces]
    whole = [(0, 0, faces.shape[2], faces.shape[1])]
    with one_thread():
        detector.detect_emotions(bgr[0], face_rectangles=whole)  # warm-up: loads the model
        times = []
        for image in bgr[:singles]:
            start = time.perf_counter()
            detector.detect_emotions(image, face_rectangles=whole)
            times.append(time.perf_counter() - start)
        # Batched: all faces tiled in one picture, their boxes given, one call
        # (fer classifies every face of a picture in one model call).
        mosaic, boxes = fer_mosaic(bgr[:batch])
        start = time.perf_counter()
        out = detector.detect_emotions(mosaic, face_rectangles=boxes)
        batched = (time.perf_counter() - start) / len(boxes)
        on_frames = _fer_frames(detector, frames)
        placed = len(portraits()[:2])  # faces in every moving-faces frame
        on_video = _fer_frames(detector, [(frame, placed) for frame in video_frames or []])
    import importlib.metadata as md

    return {"version": md.version("fer"), "ms_single": 1000 * float(np.median(times)), "ms_batched": 1000 * batched,
            "n_batched": len(out), **on_frames, "video": on_video}


def _fer_frames(detector, frames) -> dict | None:
    """fer's whole pipeline on ``[(frame, faces placed), ...]``: fps and faces found."""
    if not frames:
        return None
    detector.detect_emotions(frames[0][0])
    found = 0
    start = time.perf_counter()
    for frame, _ in frames:
        found += len(detector.detect_emotions(frame))
    seconds = time.perf_counter() - start
    return {"fps": len(frames) / seconds, "ms_per_frame": 1000 * seconds / len(frames), "frames": len(frames),
            "faces_found": found, "faces_placed": sum(p for _, p in frames)}


# --------------------------------------------------------------------------- video check


def moving_faces_frames(*, seconds: float = 10.0, fps: float = 10.0) -> list:
    """640x480 BGR frames of the two portraits' faces gliding across a gray background."""
    import cv2

    photos = portraits()
    cuts = [cv2.resize(photos[0][1][20:240, 110:330], (170, 170), interpolation=cv2.INTER_AREA)]
    if len(photos) > 1:
        cuts.append(cv2.resize(photos[1][1][60:420, 100:440], (180, 190), interpolation=cv2.INTER_AREA))
    width, height = FRAME_SIZE
    n = int(round(seconds * fps))
    frames = []
    for i in range(n):
        frame = np.full((height, width, 3), 140, np.uint8)
        t = i / max(n - 1, 1)
        x0 = int(10 + t * (width / 2 - 190))
        frame[20 : 20 + cuts[0].shape[0], x0 : x0 + cuts[0].shape[1]] = cuts[0]
        if len(cuts) > 1:
            x1 = int(width - 200 - t * (width / 2 - 220))
            frame[270 : 270 + cuts[1].shape[0], x1 : x1 + cuts[1].shape[1]] = cuts[1]
        frames.append(frame)
    return frames


def write_moving_faces_video(path, *, seconds: float = 10.0, fps: float = 10.0) -> int:
    """:func:`moving_faces_frames` written as an mp4v video. Returns frames written."""
    import cv2

    frames = moving_faces_frames(seconds=seconds, fps=fps)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, FRAME_SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return len(frames)


def time_tracking(model, frames, detector: str, redetect: int, *, min_face: int = 48) -> dict:
    """Frames per second of the video pipeline with :class:`FaceTracker` (full search every ``redetect`` frames)."""
    from fer_bench.tracking import FaceTracker

    faces_placed = len(portraits()[:2])
    with one_thread():
        FaceTracker(detector, min_face=min_face).find(frames[0])  # warm-up: loads the detector
        tracker = FaceTracker(detector, redetect=redetect, min_face=min_face)
        counts = []
        start = time.perf_counter()
        for frame in frames:
            found = tracker.find(frame)
            if found:
                model.predict_proba(np.stack([f.crop for f in found]))
            counts.append(len(found))
        seconds = time.perf_counter() - start
    return {"fps": len(frames) / seconds, "ms_per_frame": 1000 * seconds / len(frames), "frames": len(frames),
            "redetect": redetect, "full_searches": tracker.full_searches, "faces_found": sum(counts),
            "faces_placed": faces_placed * len(frames),
            "frames_with_all_faces": sum(c == faces_placed for c in counts)}


def video_check(model, *, detector: str = "dlib-hog", every: int = 1, out_dir=None) -> dict:
    """Predict on the 10-second video with annotation; check the records and the annotated video."""
    import cv2

    from fer_bench.predict import PredictOptions, predict_video

    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="fer-bench-video-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    source, annotated = out_dir / "moving_faces.mp4", out_dir / "moving_faces.annotated.mp4"
    written = write_moving_faces_video(source)
    faces_placed = len(portraits()[:2])
    start = time.perf_counter()
    per_frame = list(predict_video(model, source, options=PredictOptions(detector=detector, every=every),
                                   annotate_to=annotated))
    seconds = time.perf_counter() - start
    capture = cv2.VideoCapture(str(annotated))
    annotated_frames = 0
    while capture.read()[0]:
        annotated_frames += 1
    capture.release()
    counts = [sum(r["face"] is not None for r in records) for records in per_frame]
    return {
        "video": str(source), "annotated": str(annotated), "frames_written": written,
        "frames_processed": len(per_frame), "expected_processed": -(-written // every),
        "frames_with_all_faces": sum(c == faces_placed for c in counts), "faces_per_frame": faces_placed,
        "records": sum(len(r) for r in per_frame), "annotated_frames": annotated_frames,
        "fps": len(per_frame) / seconds,
        "ok": len(per_frame) == -(-written // every) and annotated_frames == written
        and all(c == faces_placed for c in counts),
    }


# --------------------------------------------------------------------------- report


def _frame_row(name: str, row: dict) -> str:
    """One pipeline's line of a frames-per-second table."""
    if "error" in row:
        return f"  {name:<44} {row['error']}"
    return (f"  {name:<44} {row['fps']:>7.2f} {row['ms_per_frame']:>9.1f} "
            f"{row['faces_found']:>10}/{row['faces_placed']:<8}")


def format_table(results: dict) -> str:
    """The figures as a plain text table."""
    lines = [f"per face (48x48, one thread; faces: {results['faces_source']})",
             f"  {'model':<44} {'ms single':>10} {'ms batched':>11}"]
    for name, row in results["per_face"].items():
        if "error" in row:
            lines.append(f"  {name:<44} {row['error']}")
        else:
            lines.append(f"  {name:<44} {row['ms_single']:>10.3f} {row['ms_batched']:>11.3f}")
    if results["per_frame"]:
        lines += ["", f"per frame (640x480, {results['frames']} frames of real faces, detection + alignment + "
                      f"model, one thread, min face {results['min_face']} px)",
                  f"  {'pipeline':<44} {'fps':>7} {'ms/frame':>9} {'faces found/placed':>19}"]
    lines += [_frame_row(name, row) for name, row in results["per_frame"].items()]
    if results.get("tracking"):
        lines += ["", f"video ({results['video_frames']} frames of 640x480, two faces moving; detection + "
                      "alignment + model, one thread; full search every N frames, faces followed in between)",
                  f"  {'pipeline':<44} {'fps':>7} {'ms/frame':>9} {'faces found/placed':>19}"]
        lines += [_frame_row(name, row) for name, row in results["tracking"].items()]
    if results.get("video_check"):
        v = results["video_check"]
        lines += ["", f"video check: {v['frames_written']} frames written, {v['frames_processed']} processed, "
                      f"{v['frames_with_all_faces']} with all {v['faces_per_frame']} faces, {v['records']} records, "
                      f"annotated video {v['annotated_frames']} frames, {v['fps']:.1f} fps -> "
                      f"{'OK' if v['ok'] else 'MISMATCH'}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="saved classical model (the one to deploy)")
    parser.add_argument("--cnn", default=None, help="saved CNN model to time as well (needs Keras)")
    parser.add_argument("--data", default=os.environ.get("FER_BENCH_DATA", "data/fer2013"),
                        help="FER-2013 folder for the 48x48 faces (else crops of the sample portraits)")
    parser.add_argument("--faces", type=int, default=500, help="faces in the batched timing")
    parser.add_argument("--singles", type=int, default=100, help="faces timed one at a time")
    parser.add_argument("--frames", type=int, default=12, help="640x480 frames per detector")
    parser.add_argument("--cnn-frames", type=int, default=3, help="frames for dlib-cnn (slow on a CPU)")
    parser.add_argument("--min-face", type=int, default=None, help="smallest face in pixels [default: predict's]")
    parser.add_argument("--detectors", default="haar,dlib-hog,dlib-cnn", help="comma-separated detectors")
    parser.add_argument("--redetect", default="1,5,10",
                        help="full-search intervals timed on the moving-faces video (comma-separated; '' skips)")
    parser.add_argument("--no-fer", action="store_true", help="skip the fer package even if installed")
    parser.add_argument("--video-check", action="store_true", help="also run the 10-second video check")
    parser.add_argument("--video-dir", default=None, help="where the video check writes its videos")
    parser.add_argument("--json", default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    from fer_bench.models import load_model
    from fer_bench.faces import DEFAULT_MIN_FACE

    min_face = args.min_face or DEFAULT_MIN_FACE
    model = load_model(args.model)
    faces, faces_source = load_faces(args.data, max(args.faces, args.singles))
    results = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
               "model": args.model, "faces_source": faces_source, "min_face": min_face, "per_face": {},
               "per_frame": {}}
    label = f"classic {getattr(model, 'features', '')}+{getattr(model, 'classifier', '')} ({Path(args.model).name})"
    results["per_face"][label] = time_model_per_face(model, faces, batch=args.faces, singles=args.singles)
    if args.cnn:
        limit_tensorflow_threads()
        try:
            cnn = load_model(args.cnn)
            results["per_face"][f"cnn ({Path(args.cnn).name})"] = time_model_per_face(
                cnn, faces, batch=args.faces, singles=args.singles)
        except Exception as error:  # Keras missing, or not a model: reported in the table
            results["per_face"][f"cnn ({Path(args.cnn).name})"] = {"error": f"{type(error).__name__}: {error}"}
    fer_faces = faces if faces_source.startswith("FER") else None
    frames = make_frames(args.frames, fer_faces=fer_faces)
    results["frames"] = len(frames)
    for detector in [d.strip() for d in args.detectors.split(",") if d.strip()]:
        subset = frames[: args.cnn_frames] if detector == "dlib-cnn" else frames
        results["per_frame"][f"{detector} + classic"] = time_pipeline(model, subset, detector, min_face=min_face)
    intervals = [int(r) for r in args.redetect.split(",") if r.strip()]
    video_frames = moving_faces_frames() if intervals else None
    if intervals:
        results["video_frames"] = len(video_frames)
        results["tracking"] = {}
        for detector in [d.strip() for d in args.detectors.split(",") if d.strip() and d.strip() != "dlib-cnn"]:
            for redetect in intervals:
                results["tracking"][f"{detector} + classic, full search every {redetect}"] = time_tracking(
                    model, video_frames, detector, redetect, min_face=min_face)
    if not args.no_fer:
        reference = fer_reference(faces, frames, batch=args.faces, singles=args.singles, video_frames=video_frames)
        if "error" not in reference:
            results["per_face"][f"fer {reference['version']} emotion CNN (TFLite, 64x64)"] = reference
            results["per_frame"][f"fer {reference['version']} (Haar + its CNN)"] = reference
            if reference["video"]:
                results["tracking"][f"fer {reference['version']} (Haar + its CNN, every frame)"] = reference["video"]
        else:
            results["fer"] = reference
    if args.video_check:
        results["video_check"] = video_check(model, out_dir=args.video_dir)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(format_table(results))
    if results.get("fer"):
        print(f"\nfer package not timed: {results['fer']['error']}")
    return 0 if not results.get("video_check") or results["video_check"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())

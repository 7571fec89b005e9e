"""Deployment table: every shipped model, the Keras CNN and the ``fer`` package, each in its own process.

For each model (the shipped ones by name, ``fer_bench.models.shipped_models()``;
the Keras CNN that the shipped ONNX CNN was exported from, ``--keras``; and the
``fer`` package's emotion model if it is importable), a fresh Python process,
held to one thread (``threadpool_limits(1)``, OpenCV one thread, ONNX Runtime
``intra_op_num_threads=1``, TensorFlow intra/inter op threads 1, TFLite
``num_threads=1``), loads the model and measures on the same FER-2013
PrivateTest faces:

- milliseconds a face, one at a time (median over ``--singles`` faces) and
  batched (``--batch`` faces in one call), by the harness's timer
  (:func:`fer_bench.experiment.harness.time_prediction`);
- model bytes on disk;
- peak resident memory (``ru_maxrss``) after loading, and after loading and
  predicting the batch (before the timer is imported): a process of its own,
  so the peak is the model's own (with the interpreter and the imports the
  model needs);
- whether TensorFlow got imported.

PrivateTest accuracy is the one the model's record states (the shipped JSON
record; for the Keras CNN its training record).  ``fer`` has no record, so its
accuracy is measured here on all of PrivateTest.  The ONNX CNN and the Keras
CNN are compared on the batched faces: top-1 disagreements and the largest
probability difference.

Run::

    python benchmarks/bench_deploy.py [--data ../shared/data/fer2013] [--keras runs/cpu/models/cnn-vgg_cpu.zip]
        [--batch 300] [--singles 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

KERAS_CNN = ROOT / "runs" / "cpu" / "models" / "cnn-vgg_cpu.zip"
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def peak_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports ``ru_maxrss`` in KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- child process: one model


def measure_fer_bench_model(spec: dict, faces: np.ndarray, batch: int, singles: int) -> dict:
    """Load one fer-bench model (shipped name or path) on one thread, time it, keep its batched probabilities."""
    from fer_bench.models import load_model, resolve_model

    if spec["kind"] == "keras":
        from benchmarks.bench_predict import limit_tensorflow_threads

        limit_tensorflow_threads()  # before TensorFlow runs anything
    from benchmarks.bench_predict import one_thread

    model = load_model(spec["model"], threads=1)
    load_mb = peak_mb()
    with one_thread():
        proba = model.predict_proba(faces[:batch])
    predict_mb = peak_mb()  # taken before the timer's module is imported: the model's own cost
    from fer_bench.experiment.harness import time_prediction

    timing = time_prediction(model, faces, batch=batch, singles=singles)
    return {"ms_single": timing["predict_ms_single"], "ms_batched": timing["predict_ms_per_face"],
            "bytes": resolve_model(spec["model"]).stat().st_size, "peak_mb_load": load_mb,
            "peak_mb": predict_mb, "classes": list(model.classes_), "proba": proba.tolist(),
            "runtime": spec.get("runtime") or getattr(model, "runtime", type(model).__name__)}


def measure_fer(faces: np.ndarray, batch: int, singles: int, test_X: np.ndarray, test_y: np.ndarray) -> dict:
    """The ``fer`` package's emotion model, timed as ``bench_predict.fer_reference`` times it, plus its accuracy.

    ``FER()`` runs its quantized TFLite model; the interpreter is built here with
    one thread and handed to ``FER`` through its class-level cache.  Faces go
    in with their box given (the whole 48x48 face, ``offsets=(0, 0)``: fer's
    default widens a detector's box by 10 pixels, which here would add a
    border to the crop), one picture a call; batched, all faces tiled in one
    picture with their boxes, one call.
    """
    from benchmarks.bench_predict import fer_mosaic, import_fer, limit_tensorflow_threads, one_thread

    FER, error = import_fer()
    if error:
        return {"error": error}
    import importlib.util
    import importlib.metadata as md

    import cv2
    import tensorflow as tf

    limit_tensorflow_threads()
    tflite_path = Path(importlib.util.find_spec("fer").origin).parent / "data" / "emotion_model_quantized.tflite"
    interpreter = tf.lite.Interpreter(model_path=str(tflite_path), num_threads=1)
    interpreter.allocate_tensors()
    FER._tflite_interpreter_cache = interpreter
    detector = FER(offsets=(0, 0))  # the faces are FER-2013 crops already: no margin around the box
    load_mb = peak_mb()

    def mosaic(gray_faces):
        return fer_mosaic([cv2.cvtColor(face, cv2.COLOR_GRAY2BGR) for face in gray_faces])

    def labels(found):
        return [max(face["emotions"], key=face["emotions"].get) for face in found]

    whole = [(0, 0, 48, 48)]
    with one_thread():
        detector.detect_emotions(cv2.cvtColor(faces[0], cv2.COLOR_GRAY2BGR), face_rectangles=whole)  # warm-up
        times = []
        for face in faces[:singles]:
            image = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
            start = time.perf_counter()
            detector.detect_emotions(image, face_rectangles=whole)
            times.append(time.perf_counter() - start)
        picture, boxes = mosaic(faces[:batch])
        start = time.perf_counter()
        found = detector.detect_emotions(picture, face_rectangles=boxes)
        batched = (time.perf_counter() - start) / len(boxes)
        predict_mb = peak_mb()
        # Accuracy on all of PrivateTest, 500 faces a picture (not timed).
        predicted = []
        for start_index in range(0, len(test_X), 500):
            picture, boxes = mosaic(test_X[start_index:start_index + 500])
            predicted += labels(detector.detect_emotions(picture, face_rectangles=boxes))
    truth = np.asarray(FER_CLASSES)[test_y]
    return {"ms_single": 1000 * float(np.median(times)), "ms_batched": 1000 * batched,
            "n_batched": len(found), "bytes": tflite_path.stat().st_size, "peak_mb_load": load_mb,
            "peak_mb": predict_mb, "accuracy": float(np.mean(np.asarray(predicted) == truth)),
            "accuracy_source": f"measured here, all {len(truth)} PrivateTest faces",
            "runtime": f"fer {md.version('fer')}, TFLite (quantized)"}


def child_main(spec_path: str) -> int:
    """Measure the one model ``spec_path`` describes and print the result as one JSON line."""
    spec = json.loads(Path(spec_path).read_text())
    scratch = Path(spec["scratch"])
    faces = np.load(scratch / "faces.npy")
    if spec["kind"] == "fer":
        result = measure_fer(faces, spec["batch"], spec["singles"], np.load(scratch / "test_X.npy"),
                             np.load(scratch / "test_y.npy"))
    else:
        result = measure_fer_bench_model(spec, faces, spec["batch"], spec["singles"])
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- parent process: the table


def child_environment() -> dict:
    """Environment of a measuring process: one thread for BLAS, OpenMP, TensorFlow and XLA; the repository importable."""
    from fer_bench.experiment.harness import ONE_THREAD_ENVIRONMENT, XLA_ONE_THREAD

    environment = {**ONE_THREAD_ENVIRONMENT, "TF_CPP_MIN_LOG_LEVEL": "2"}
    environment["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return environment


def prepare_main(plan_path: str, data: str, keras: str, batch: int, singles: int) -> int:
    """Load the dataset, write the faces and the list of models to measure beside ``plan_path``.

    Run in a process of its own: Linux carries a process's peak memory
    (``ru_maxrss``) over into the processes it starts, so the parent that
    starts the measuring processes must stay small.
    """
    from fer_bench.data import load_dataset
    from fer_bench.models import shipped_models

    scratch = Path(plan_path).parent
    dataset = load_dataset(data)
    test_X = dataset.test.X
    rng = np.random.default_rng(0)
    faces = test_X[rng.choice(len(test_X), min(max(batch, singles), len(test_X)), replace=False)]
    np.save(scratch / "faces.npy", faces)
    np.save(scratch / "test_X.npy", test_X)
    np.save(scratch / "test_y.npy", np.asarray(dataset.test.y))
    specs = [{"label": f"`{record['name']}`", "kind": "shipped", "model": record["name"],
              "accuracy": record.get("accuracy"), "runtime": record.get("runtime")} for record in shipped_models()]
    keras = Path(keras)
    if keras.is_file():
        specs.append({"label": "Keras CNN (`cnn.onnx`'s source)", "kind": "keras", "model": str(keras),
                      "accuracy": keras_record(keras).get("accuracy"),
                      "runtime": "Keras (TensorFlow)"})
    specs.append({"label": "`fer` package", "kind": "fer", "model": None, "accuracy": None})
    Path(plan_path).write_text(json.dumps({"specs": specs, "environment": child_environment(),
                                           "faces": len(faces)}))
    return 0


def run_child(arguments: list, environment: dict, timeout: float) -> dict:
    """Run this script with ``arguments`` in a fresh process; its last JSON line, or ``{"error": ...}``."""
    try:
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), *arguments],
                              env={**os.environ, **environment}, capture_output=True, text=True, timeout=timeout,
                              cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": f"process failed: {tail}"}
    return json.loads(lines[-1])


def keras_record(keras_path: Path) -> dict:
    """The training record of a Keras CNN written by ``fer-bench train cnn`` (``runs/X/records/<cell>.json``)."""
    record = keras_path.parent.parent / "records" / f"{keras_path.stem}.json"
    return json.loads(record.read_text()) if record.is_file() else {}


def compare(onnx: dict, keras: dict) -> dict:
    """Top-1 disagreements and the largest probability difference between two models on the same faces."""
    a, b = np.asarray(onnx["proba"]), np.asarray(keras["proba"])
    if onnx["classes"] != keras["classes"] or a.shape != b.shape:
        return {"error": "the two models have different classes or answered different faces"}
    return {"faces": len(a), "top1_disagreements": int(np.sum(a.argmax(1) != b.argmax(1))),
            "max_probability_difference": float(np.abs(a - b).max())}


def markdown(rows: list, agreement: dict | None) -> str:
    lines = ["| model | runtime | PrivateTest | ms a face, one at a time | ms a face, batched | model size | "
             "peak memory after loading | peak memory after predicting | TensorFlow imported |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['label']} | {row['error']} | | | | | | | |")
            continue
        accuracy = f"{100 * row['accuracy']:.2f}%" if row.get("accuracy") is not None else "n/a"
        if row.get("accuracy_note"):
            accuracy += f" ({row['accuracy_note']})"
        lines.append(f"| {row['label']} | {row['runtime']} | {accuracy} | {row['ms_single']:.2f} | "
                     f"{row['ms_batched']:.2f} | {row['bytes'] / 1e6:.2f} MB | {row['peak_mb_load']:.0f} MB | "
                     f"{row['peak_mb']:.0f} MB | {'yes' if row['tensorflow_imported'] else 'no'} |")
    if agreement is not None:
        if "error" in agreement:
            lines.append(f"\nONNX CNN against Keras CNN: {agreement['error']}")
        else:
            lines.append(f"\nONNX CNN against Keras CNN on the {agreement['faces']} batched faces: "
                         f"{agreement['top1_disagreements']} top-1 disagreements, largest probability difference "
                         f"{agreement['max_probability_difference']:.2e}.")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=os.environ.get("FER_BENCH_DATA"),
                        help="FER-2013 folder (default: env FER_BENCH_DATA)")
    parser.add_argument("--keras", type=Path, default=KERAS_CNN,
                        help="the Keras CNN the shipped ONNX CNN was exported from (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=300, help="faces in the batched call (default: 300)")
    parser.add_argument("--singles", type=int, default=50, help="faces timed one at a time (default: 50)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed each model's process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.prepare:
        return prepare_main(args.prepare, args.data, str(args.keras), args.batch, args.singles)
    if not args.data or not Path(args.data).exists():
        print(f"error: FER-2013 not found at {args.data!r}; pass --data or set FER_BENCH_DATA", file=sys.stderr)
        return 1

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-deploy-") as scratch:
        scratch = Path(scratch)
        plan_path = scratch / "plan.json"
        done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--prepare", str(plan_path),
                               "--data", str(args.data), "--keras", str(args.keras), "--batch", str(args.batch),
                               "--singles", str(args.singles)], cwd=ROOT)
        if done.returncode != 0:
            print("error: could not load the faces (see above)", file=sys.stderr)
            return 1
        plan = json.loads(plan_path.read_text())
        parent_mb = peak_mb()
        for number, spec in enumerate(plan["specs"]):
            print(f"measuring {spec['label']} ...", file=sys.stderr, flush=True)
            spec_path = scratch / f"model-{number}.json"
            spec_path.write_text(json.dumps({**spec, "scratch": str(scratch), "batch": args.batch,
                                             "singles": args.singles}))
            row = {**spec, **run_child(["--child", str(spec_path)], plan["environment"], args.timeout)}
            if spec["kind"] == "fer" and "error" not in row:
                row["accuracy_note"] = "measured here"
            rows.append(row)

    onnx_row = next((row for row in rows if row["kind"] == "shipped" and row.get("runtime") == "onnxruntime"
                     and "error" not in row), None)
    keras_row = next((row for row in rows if row["kind"] == "keras" and "error" not in row), None)
    agreement = compare(onnx_row, keras_row) if onnx_row and keras_row else None
    if not args.keras.is_file():
        print(f"note: no Keras CNN at {args.keras}; the ONNX/Keras check was skipped", file=sys.stderr)

    print(f"FER-2013 PrivateTest faces: {min(args.singles, plan['faces'])} one at a time, "
          f"{min(args.batch, plan['faces'])} "
          f"batched; one thread; each model in its own process\n")
    print(markdown(rows, agreement))
    print(f"\nPeak memory includes the Python interpreter and imports; the process that started the measuring "
          f"processes peaked at {parent_mb:.0f} MB, a floor for every figure.")
    if args.json:
        for row in rows:
            row.pop("proba", None)
        args.json.write_text(json.dumps({"rows": rows, "onnx_vs_keras": agreement, "batch": args.batch,
                                         "singles": args.singles, "parent_peak_mb": parent_mb}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

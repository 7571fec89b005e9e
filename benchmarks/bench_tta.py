"""What test-time augmentation is worth to a trained CNN, on PublicTest.

Never reads PrivateTest.  Scores one saved deep model (a ``fer-bench train
cnn`` model file, or a shipped name) on the PublicTest faces with each
test-time augmentation: none (the centre window), ``flip`` (the face and its
mirror image) and ``ten_crop`` (four corner windows, the centre and their
mirror images), and times each, batched, on this machine::

    nice -n 5 python benchmarks/bench_tta.py runs/cpu/models/cnn-vgg_cpu.zip --data ../shared/data/fer2013

Prints one line per setting: PublicTest accuracy, macro F1, and milliseconds
a face (batches of 256, the threads TensorFlow or ONNX Runtime choose).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from fer_bench.data import default_cache_dir, load_dataset
from fer_bench.models import load_model, resolve_model
from fer_deep.model import check_tta

MODES = ("none", "flip", "ten_crop")


def score_modes(model, faces, labels, modes=MODES, batch: int = 256) -> list:
    """PublicTest accuracy, macro F1 and batched ms a face of ``model`` under each test-time augmentation."""
    rows = []
    classes = list(model.classes_)
    for mode in modes:
        model.tta = check_tta(mode)  # none -> False, as a loaded model holds it
        start = time.perf_counter()
        proba = np.concatenate([model.predict_proba(faces[i:i + batch]) for i in range(0, len(faces), batch)])
        seconds = time.perf_counter() - start
        predicted = np.asarray(classes)[np.argmax(proba, axis=1)]
        rows.append({"tta": mode, "accuracy": float(accuracy_score(labels, predicted)),
                     "f1_macro": float(f1_score(labels, predicted, average="macro")),
                     "ms_per_face": 1000 * seconds / len(faces)})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a deep model file or a shipped deep model's name")
    parser.add_argument("--data", required=True, help="FER-2013 folder (Kaggle layout)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: none, flip, ten_crop")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data, cache_dir=default_cache_dir())
    model = load_model(resolve_model(args.model))
    if not hasattr(model, "tta"):
        parser.error(f"{args.model}: not a deep model (no test-time augmentation to compare)")
    faces, labels = dataset.val.X, np.asarray(dataset.classes)[dataset.val.y]
    print(f"{args.model} on {dataset.val.name} ({len(faces)} faces)")
    for row in score_modes(model, faces, labels, [mode.strip() for mode in args.modes.split(",")]):
        print(f"  {row['tta']:<9} accuracy {row['accuracy']:.4f}  macro F1 {row['f1_macro']:.4f}  "
              f"{row['ms_per_face']:.2f} ms a face")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

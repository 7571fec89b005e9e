"""What test-time augmentation is worth to a trained CNN or classical model, on PublicTest.

Never reads PrivateTest.  Scores one saved model (a ``fer-bench train cnn``
or ``fer-bench run`` model file, or a shipped name) on the PublicTest faces
with each test-time augmentation: none (a CNN's centre window), ``flip`` (the
face and its mirror image) and, for CNNs, ``ten_crop`` (four corner windows,
the centre and their mirror images), and times each, batched, on this
machine::

    nice -n 5 python benchmarks/bench_tta.py runs/cpu/models/cnn-vgg_cpu.zip --data ../shared/data/fer2013

Prints one line per setting: PublicTest accuracy, macro F1, and milliseconds
a face (batches of 256, the threads TensorFlow or ONNX Runtime choose; a
classical model extracts its features on one process).

Measured for classical models (seed 0; the probabilities of the face and its
mirror image averaged): ``sift_words+hog+lbp+landmarks__local_mkl__flip``
(runs/mkl09, trained with mirrored faces) 63.00% without, 62.72% with (112
and 213 ms a face), so the cell keeps none; the shipped ``svm`` (trained
without mirrored faces) 60.49% without and 57.93% with: it scores 52.91% on
the mirror images alone.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from fer_bench.data import default_cache_dir, load_dataset
from fer_bench.models import load_model, resolve_model
MODES = ("none", "flip", "ten_crop")
CLASSIC_MODES = ("none", "flip")


def tta_checker(model):
    """The family's own normalisation of a test-time augmentation setting."""
    if model.family == "classic":
        from fer_classic.model import check_tta
    else:
        from fer_deep.model import check_tta
    return check_tta


def score_modes(model, faces, labels, modes=MODES, batch: int = 256) -> list:
    """PublicTest accuracy, macro F1 and batched ms a face of ``model`` under each test-time augmentation."""
    rows = []
    classes = list(model.classes_)
    check_tta = tta_checker(model)
    for mode in modes:
        model.tta = check_tta(mode)  # a CNN's none -> False, as a loaded model holds it
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
    parser.add_argument("model", help="a deep or classical model file, or a shipped model's name")
    parser.add_argument("--data", required=True, help="FER-2013 folder (Kaggle layout)")
    parser.add_argument("--modes", default=None,
                        help="comma-separated: none, flip, ten_crop (CNNs) [default: every one the model has]")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data, cache_dir=default_cache_dir())
    model = load_model(resolve_model(args.model))
    if not hasattr(model, "tta"):
        parser.error(f"{args.model}: an ensemble (no test-time augmentation of its own to compare)")
    modes = CLASSIC_MODES if model.family == "classic" else MODES
    if args.modes:
        modes = [mode.strip() for mode in args.modes.split(",")]
        try:
            for mode in modes:
                tta_checker(model)(mode)
        except ValueError as error:
            parser.error(str(error))
    faces, labels = dataset.val.X, np.asarray(dataset.classes)[dataset.val.y]
    print(f"{args.model} on {dataset.val.name} ({len(faces)} faces)")
    for row in score_modes(model, faces, labels, modes):
        print(f"  {row['tta']:<9} accuracy {row['accuracy']:.4f}  macro F1 {row['f1_macro']:.4f}  "
              f"{row['ms_per_face']:.2f} ms a face")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

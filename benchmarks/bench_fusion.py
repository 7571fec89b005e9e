"""Which finished cells are worth combining: every subset's accuracy on PublicTest, weights cross-fitted.

Never reads PrivateTest.  For each cell of a run folder it computes (once;
stored under ``RUN/predictions/members/`` as ``fer-bench ensemble`` stores
them) the model's probabilities on the PublicTest faces, then, for every
subset of two or more cells, chooses the weights as ``fer-bench ensemble``
does (:func:`fer_bench.ensemble.choose_weights`) and reports:

- the PublicTest accuracy with the weights fitted on all of PublicTest (what
  ``fer-bench ensemble`` records as its validation accuracy; optimistic);
- the two-fold cross-fitted accuracy: weights chosen on one half of
  PublicTest (seeded, stratified), scored on the other half, and back
  (``--repeats N`` averages N such halvings).  More
  members mean more weights to fit, so this is the figure to choose a subset
  by; the chosen subset is then scored on PrivateTest by ``fer-bench
  ensemble``.  Shipped models take part as ``shipped:NAME``::

    nice -n 5 python benchmarks/bench_fusion.py runs/cpu --cells cnn-vgg_cpu,cnn-resnet_cpu,hog+lbp+landmarks__svm__flip \\
        --data ../shared/data/fer2013

``--criterion accuracy,log_loss`` compares what the weights are chosen by
(:func:`fer_bench.ensemble.choose_weights`).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np

from fer_bench.data import default_cache_dir, load_dataset
from fer_bench.ensemble import CRITERIA, choose_weights
from fer_bench.experiment.ensemble_cell import member_model_path, member_probabilities, member_records
from fer_bench.models import load_model


def validation_probabilities(run_dir: Path, records, faces) -> dict:
    """Each cell's PublicTest probabilities, stored with the run as ``fer-bench ensemble`` stores them."""
    paths = [member_model_path(run_dir, record) for record in records]
    cells = [record["cell"] for record in records]
    members = [LazyModel(path) for path in paths]
    return dict(zip(cells, member_probabilities(run_dir, cells, paths, members, faces, log=print)))


class LazyModel:
    """A model file loaded only when it has to score (its probabilities may be stored already)."""

    def __init__(self, path):
        self.path = path
        self._model = None

    def predict_proba(self, X):
        if self._model is None:
            self._model = load_model(self.path)
        return self._model.predict_proba(X)


def halves(y, seed: int = 0):
    """Two stratified halves of the indices of ``y``."""
    rng = np.random.default_rng(seed)
    first = []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        first.extend(members[: len(members) // 2])
    mask = np.zeros(len(y), bool)
    mask[first] = True
    return np.flatnonzero(mask), np.flatnonzero(~mask)


def subset_scores(probabilities: dict, y, *, seed: int = 0, repeats: int = 1, criterion: str = "accuracy") -> list:
    """Fitted and cross-fitted PublicTest accuracy and the weights of every subset of two or more cells.

    The cross-fitted accuracy is averaged over ``repeats`` halvings (seeds ``seed``, ``seed + 1``, ...).
    """
    names = list(probabilities)
    splits = [halves(y, seed + repeat) for repeat in range(repeats)]
    rows = []
    for size in range(2, len(names) + 1):
        for subset in itertools.combinations(names, size):
            members = [probabilities[name] for name in subset]
            weights = choose_weights(members, y, criterion=criterion)
            fitted = np.mean(np.argmax(np.tensordot(weights, np.stack(members), axes=1), axis=1) == y)
            correct = 0
            for a, b in splits:
                for fit_part, score_part in ((a, b), (b, a)):
                    w = choose_weights([p[fit_part] for p in members], y[fit_part], criterion=criterion)
                    mixed = np.tensordot(w, np.stack([p[score_part] for p in members]), axes=1)
                    correct += int(np.sum(np.argmax(mixed, axis=1) == y[score_part]))
            rows.append({"cells": subset, "weights": weights.tolist(), "fitted": float(fitted),
                         "cross_fitted": correct / (len(y) * repeats)})
    return sorted(rows, key=lambda row: -row["cross_fitted"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="run folder holding the cells' records and models")
    parser.add_argument("--cells", required=True,
                        help="comma-separated finished cells of the run folder, or shipped models as shipped:NAME")
    parser.add_argument("--data", required=True, help="FER-2013 folder (Kaggle layout)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the two PublicTest halves")
    parser.add_argument("--repeats", type=int, default=1,
                        help="halvings of PublicTest the cross-fitted accuracy is averaged over")
    parser.add_argument("--criterion", default="accuracy",
                        help="comma-separated weight criteria to compare: accuracy, log_loss [default: accuracy]")
    parser.add_argument("--top", type=int, default=15, help="rows shown, best cross-fitted first")
    args = parser.parse_args(argv)

    cells = [cell.strip() for cell in args.cells.split(",") if cell.strip()]
    criteria = [c.strip() for c in args.criterion.split(",") if c.strip()]
    unknown = [c for c in criteria if c not in CRITERIA]
    if unknown or not criteria:
        parser.error(f"--criterion takes {', '.join(CRITERIA)}, got {args.criterion}")
    dataset = load_dataset(args.data, cache_dir=default_cache_dir())
    records = member_records(args.run_dir, cells)
    probabilities = validation_probabilities(args.run_dir, records, dataset.val.X)
    y = np.asarray(dataset.val.y)
    for name, proba in probabilities.items():
        print(f"{name}: PublicTest {np.mean(np.argmax(proba, axis=1) == y):.4f}")
    for criterion in criteria:
        print(f"weights by {criterion}, cross-fitted over {args.repeats} halving(s) of PublicTest")
        print(f"{'cross-fitted':>12} {'fitted':>7}  cells (weights fitted on all of PublicTest)")
        for row in subset_scores(probabilities, y, seed=args.seed, repeats=args.repeats,
                                 criterion=criterion)[: args.top]:
            shown = ", ".join(f"{cell} {w:.2f}" for cell, w in zip(row["cells"], row["weights"]))
            print(f"{row['cross_fitted']:>12.4f} {row['fitted']:>7.4f}  {shown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

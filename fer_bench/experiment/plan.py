"""What a sweep will run and for about how long: the networks of each preset, the ensemble cells, time estimates.

The estimates are figures measured on a 2-core x86-64 machine (AVX2, no
accelerator) with all of FER-2013's Training faces, scaled by the number of
training faces a sweep really uses:

- classical cells: :data:`CLASSIC_SECONDS`, the wall time of each classifier's
  selection and final fit on each feature set (the README's tables), plus the
  first extraction of each feature (:data:`FEATURE_SECONDS`);
- CNN cells: the measured seconds of one epoch (:data:`EPOCH_SECONDS`), or for
  a network without a measurement its multiply-adds times the faces of one
  epoch at :data:`TRAINING_MACS_PER_SECOND`, times its epochs.

CNN estimates are calibrated to the machine before a long sweep starts: a few
training batches of :data:`CALIBRATION_ARCH` are timed here and the CNN cells'
estimates scaled by the measured rate against :data:`REFERENCE_RATE` (the same
measurement on the machine the epoch timings come from); convolutions run
several times faster on CPUs with AVX-512 or AMX than on AVX2 ones, while the
classical cells' costs differ far less between them.  A machine shared with
other work takes longer; the sweep's progress lines rescale the remaining
estimate by how long the finished cells really took.
"""

from __future__ import annotations

from fer_classic.classifiers import CLASSIFIERS

FER2013_TRAIN = 28_709

ACCELERATOR_NETWORKS = ("vgg", "mobilenet_v2")
"""Networks sized for an accelerator (about a day of a 2-core CPU each): in the ``accelerator`` preset only."""

CLASSIC_SECONDS = {
    "svm": {"hog": 500, "lbp": 330, "landmarks": 120, "hog+lbp+landmarks": 650},
    "linear_svm": {"hog": 900, "lbp": 600, "landmarks": 60, "hog+lbp+landmarks": 1200},
    "rf": {"hog": 700, "lbp": 100, "landmarks": 70, "hog+lbp+landmarks": 700},
    "dt": {"hog": 40, "lbp": 12, "landmarks": 6, "hog+lbp+landmarks": 70},
    "knn": {"hog": 30, "lbp": 10, "landmarks": 5, "hog+lbp+landmarks": 50},
    "ls_svm": {"hog": 400, "lbp": 300, "landmarks": 200, "hog+lbp+landmarks": 500},
    # One local SVM per face scored: the cell sift_words+hog+lbp+landmarks__local_mkl__flip with its
    # 57,418 faces and the whole grid (three settings), nothing else running, took 1,158 s of selection, a
    # 390 s refit (its PublicTest pass) and 1,980 s in all past its features.
    "local_mkl": {"sift_words+hog+lbp+landmarks": 1000},
    # sift_words+hog+lbp+landmarks__global_mkl__flip: its two settings' fits took 195 s and 250 s (side by side),
    # the refit 214 s; the registry fits them one after another.
    "global_mkl": {"sift_words+hog+lbp+landmarks": 330},
}
"""Classifier -> feature set -> seconds of selection and fit on all 28,709 Training faces (2 cores)."""

PREDICTION_BOUND = frozenset({"local_svm", "local_mkl", "knn"})
"""Classifiers that fit little and spend their time predicting (a local SVM a face, a neighbour search)."""

DEFAULT_CLASSIC_SECONDS = 600
"""For a pair the table lacks (a new feature or classifier)."""

# sift_words: 389 s for the 64,596 faces of a --flip cell and 49 s for its vocabulary (that cell's log).
FEATURE_SECONDS = {"hog": 5, "lbp": 40, "landmarks": 45, "sift_bovw": 60, "sift_words": 300}
"""Seconds to extract each feature from FER-2013's 35,887 faces once (then it is cached)."""

EPOCH_SECONDS = {"tutorial": 85, "seed": 85, "vgg_cpu": 290, "resnet_cpu": 300, "vgg": 1670, "mobilenet_v2": 740}
"""Seconds of one epoch on FER-2013's 28,709 Training faces plus the validation pass, 2 cores, nothing else
running: the tutorial net from its training record, vgg and mobilenet_v2 from ``benchmarks/bench_cnn.py``,
vgg_cpu from its training rate (about 100 faces a second), resnet_cpu by its multiply-adds next to vgg_cpu's."""

TRAINING_MACS_PER_SECOND = 8.0e9
"""Forward multiply-adds per second of training (about three forward passes a face) for a network
without a measured epoch: vgg_cpu's rate (100 faces a second at 81.6 M multiply-adds a face)."""

CALIBRATION_ARCH = "vgg_cpu"
REFERENCE_RATE = 158.0
"""Training faces a second of :data:`CALIBRATION_ARCH` at batch 128 (``benchmarks/bench_cnn.py``,
:func:`fer_deep.training.time_training`) on the machine of :data:`EPOCH_SECONDS`."""

CALIBRATE_ABOVE = 1800.0
"""Seconds of estimated CNN training above which the sweep times the machine (about 10 s) first."""

ENSEMBLE_SECONDS = 300
"""Scoring the members of an ensemble cell on the validation and test faces."""


def cpu_networks(names) -> list:
    """The registered networks a CPU trains in a night: all but :data:`ACCELERATOR_NETWORKS`."""
    return [name for name in names if name not in ACCELERATOR_NETWORKS]


def training_speed() -> float:
    """How many times faster than the reference machine this one trains CNNs (0.5: half as fast).

    Times :data:`CALIBRATION_ARCH` for a few batches of 128 random faces.
    """
    from fer_deep.training import time_training

    rate = time_training(CALIBRATION_ARCH, batch_size=128, batches=3, warmup=1)["faces_per_second"]
    return rate / REFERENCE_RATE


def classic_cell_seconds(spec: str, classifier: str, n_train: int, flip: bool = False,
                         candidates: int | None = None, tta: str = "none") -> float:
    """Estimated seconds of one classical cell (selection, fit, scoring) with ``n_train`` training faces.

    :data:`CLASSIC_SECONDS` holds the cost of the registry's whole grid; a cell
    that tries ``candidates`` settings (fewer when ``--param`` fixes some) is
    counted as its candidates' fits plus the final one, against the grid's.
    With ``tta="flip"`` the classifiers whose cost is their predictions
    (:data:`PREDICTION_BOUND`) take twice as long; the others' predictions
    are a small part of their cost and are not counted again.
    """
    seconds = CLASSIC_SECONDS.get(classifier, {}).get(spec)
    if seconds is None:
        parts = spec.split("+")
        known = [CLASSIC_SECONDS.get(classifier, {}).get(part) for part in parts]
        seconds = sum(known) if all(known) else DEFAULT_CLASSIC_SECONDS
    if candidates is not None and classifier in CLASSIFIERS:
        from .harness import candidate_grid

        grid = len(candidate_grid(classifier, {}, select=True))
        seconds *= (max(1, candidates) + 1) / (grid + 1)
    scale = n_train * (2 if flip else 1) / FER2013_TRAIN
    # Kernel methods grow faster than linearly with the training faces; trees and neighbours about linearly.
    exponent = 1.6 if classifier in ("svm", "linear_svm") else 1.0
    augmented = 2.0 if tta != "none" and classifier in PREDICTION_BOUND else 1.0
    return float(seconds * scale ** exponent * augmented)


def cnn_cell_seconds(arch: str, epochs: int, n_train: int, n_validation: int) -> float:
    """Estimated seconds of one CNN cell: ``epochs`` epochs of training and validation."""
    if arch in EPOCH_SECONDS:
        per_epoch = EPOCH_SECONDS[arch] * (n_train + n_validation / 3) / (FER2013_TRAIN + 3_589 / 3)
    else:
        from fer_deep import ARCHITECTURE_COSTS

        _, macs = ARCHITECTURE_COSTS.get(arch, (0, 100e6))
        per_epoch = macs * (n_train + n_validation / 3) / TRAINING_MACS_PER_SECOND
    return float(epochs * per_epoch)


def feature_seconds(specs, n_faces: int) -> float:
    """First extraction of every feature the classical cells use (each feature once) from ``n_faces`` faces
    (mirrored training faces count as faces of their own)."""
    features = {part for spec in specs for part in spec.split("+")}
    return float(sum(FEATURE_SECONDS.get(name, 60) for name in features) * n_faces / 35_887)


def clock(seconds: float) -> str:
    """``H:MM`` of a duration."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60}:{minutes % 60:02d}"


class TimeLeft:
    """The remaining estimate of a sweep, rescaled by how long its finished cells took against their estimates."""

    def __init__(self, estimates: list):
        self.estimates = list(estimates)
        self.done_estimated = 0.0
        self.done_actual = 0.0
        self.finished = 0

    def finish(self, index: int, seconds: float, ran: bool = True) -> None:
        """Cell ``index`` (0-based) is done; ``ran`` False for one skipped as finished earlier."""
        self.finished = max(self.finished, index + 1)
        if ran:
            self.done_estimated += self.estimates[index]
            self.done_actual += seconds

    def seconds(self) -> float:
        remaining = sum(self.estimates[self.finished:])
        ratio = self.done_actual / self.done_estimated if self.done_estimated > 60 else 1.0
        return remaining * ratio

"""The harness: train a model on one split, select it on the validation split, score it on the test split.

One run of a (features, classifier) cell writes one record (JSON) and one
saved model.  Hyperparameters are chosen on the validation split (PublicTest
for FER-2013) and never on the test split (PrivateTest); the chosen values and
every candidate's validation score go into the record and the model metadata.

Features are computed once per feature and dataset and cached on disk by the
model itself (``ClassicModel(memory=...)``, see
:func:`fer_classic.features.transform_faces`): a combined feature set reuses the
cached parts, and a second run of the same cell skips extraction.  Selection is
``GridSearchCV`` with a ``PredefinedSplit`` (see :func:`select_on_validation`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import socket
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.base import clone

from fer_classic.classifiers import check_classifier_name
from fer_classic.features import feature_parts, parse_feature_spec, transform_faces
from fer_classic.model import MODEL_SUFFIX, ClassicModel, check_features_for_classifier, check_tta, library_versions

from .._core import flip_faces, replacing, writable_cache_folder, write_json_atomic
from ..metrics import classification_metrics
from ..workers import call_interruptibly

RECORD_SCHEMA_VERSION = 1


# --------------------------------------------------------------------------- helpers


def machine_info() -> dict:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cores": os.cpu_count(),
    }


def cell_id(features: str, classifier: str, flip: bool = False, tta: str = "none") -> str:
    """File-safe name of a classical cell, e.g. ``hog+lbp__svm`` (``__flip`` with mirrored training faces,
    ``__tta_flip`` with mirrored test faces averaged in)."""
    return (f"{'+'.join(parse_feature_spec(features))}__{classifier}" + ("__flip" if flip else "")
            + ("" if tta == "none" else f"__tta_{tta}"))


def candidate_grid(classifier: str, fixed: dict, select: bool) -> list:
    """Parameter sets to try: the registry grid minus anything the user fixed."""
    spec = check_classifier_name(classifier)
    grid = {k: v for k, v in spec.grid.items() if k not in fixed} if select else {}
    keys = sorted(grid)
    return [{**fixed, **dict(zip(keys, values))} for values in itertools.product(*(grid[k] for k in keys))]


def fit_grid_to_faces(classifier: str, candidates: list, n_faces: int) -> tuple:
    """The candidates that can apply to ``n_faces`` training faces, and a line for those left out (or None).

    A parameter that counts training faces (``ClassifierSpec.face_counts``:
    kNN's and the local SVM's neighbours, the least-squares SVM's kernel
    centres, PCA components) cannot exceed them.  kNN refuses such a value
    (scikit-learn's "Expected n_neighbors <= n_samples_fit"); the others use
    every face instead, so their candidates above the limit would all fit the
    same model under different names.  Such a candidate is left out of the
    grid when the parameter is one the grid varies; a value kNN would refuse
    is left out wherever it comes from (a fixed or default value too).

    Raises
    ------
    ValueError
        No candidate is left; one line stating how many faces it needs.
    """
    spec = check_classifier_name(classifier)
    defaults = spec.defaults()
    keys = {key for params in candidates for key in params}
    varying = {key for key in keys if len({repr(params.get(key)) for params in candidates}) > 1}
    kept, over = [], []  # over: (key, value) pairs of the candidates left out
    for params in candidates:
        effective = {**defaults, **params}
        too_many = [(key, effective[key]) for key, refused in spec.face_counts.items()
                    if (refused or key in varying) and isinstance(effective.get(key), int)
                    and not isinstance(effective[key], bool) and effective[key] > n_faces]
        if too_many:
            over.extend(too_many)
        else:
            kept.append(params)
    if not over:
        return kept, None
    shown = sorted(set(over), key=lambda pair: (pair[0], pair[1]))
    values = ", ".join(f"{key}={value}" for key, value in shown)
    if kept:
        left_out = len(candidates) - len(kept)
        return kept, (f"{values} left out of the grid: more than the {n_faces} training faces "
                      f"({left_out} of {len(candidates)} settings; {len(kept)} tried)")
    needed = min(value for _, value in over)
    names = sorted({key for key, _ in over})
    if len(candidates) == 1:
        raise ValueError(f"{classifier}: {values} needs at least {needed} training faces and the training split "
                         f"has {n_faces}; fix a smaller value (--param {names[0]}={n_faces}) or use more faces")
    raise ValueError(f"{classifier}: every candidate of the grid needs more than the {n_faces} training faces "
                     f"({values}); selection needs at least {needed} faces, or fix a value "
                     f"(--param {names[0]}={n_faces})")


def _fits_in_this_process() -> bool:
    """Whether joblib runs ``n_jobs=None`` work here, one call after another.

    Not under another backend than joblib's own (a Dask worker's cell sets
    Dask's, which sends the grid's fits to the cluster as tasks) nor under a
    ``parallel_config`` that asks for more jobs.
    """
    import joblib
    from joblib.parallel import (LokyBackend, MultiprocessingBackend, SequentialBackend, ThreadingBackend,
                                 get_active_backend)

    backend, _ = get_active_backend()
    own = (LokyBackend, MultiprocessingBackend, SequentialBackend, ThreadingBackend)  # fer_bench.workers' loky too
    return isinstance(backend, own) and joblib.effective_n_jobs(None) == 1


def select_on_validation(estimator, candidates: list, X_train, y_train, X_val, y_val, *, n_jobs=None,
                         log=None) -> list:
    """Validation accuracy and fit seconds of ``estimator`` under each ``classifier_params`` candidate.

    ``GridSearchCV`` over Training + validation with a ``PredefinedSplit``
    whose one test fold is the validation split: every candidate is fitted on
    the training faces alone and scored on the validation faces.
    ``refit=False``: the chosen candidate is refitted by the caller on the
    training faces only (refitting on both would train on the selection split).
    ``log``, when the candidates are fitted one after another in this
    process (``n_jobs`` None, joblib's own backend), hears each one's
    accuracy as soon as it is scored.

    Returns
    -------
    list of dict
        ``{"params", "validation_accuracy", "fit_seconds"}`` per candidate, in order.
    """
    from sklearn.model_selection import GridSearchCV, PredefinedSplit

    X = np.concatenate([X_train, X_val])
    y = np.concatenate([y_train, y_val])
    fold = np.r_[np.full(len(y_train), -1), np.zeros(len(y_val), dtype=int)]
    scoring = None
    if log is not None and n_jobs is None and _fits_in_this_process():
        scored = []

        def scoring(model, X, y):
            accuracy = model.score(X, y)
            scored.append(accuracy)
            log(f"{model.classifier_params} -> validation accuracy {accuracy:.4f} "
                f"({len(scored)} of {len(candidates)} settings tried)")
            return accuracy

    search = GridSearchCV(estimator, {"classifier_params": candidates}, cv=PredefinedSplit(fold), refit=False,
                          n_jobs=n_jobs, error_score="raise", scoring=scoring)
    # The validation faces also calibrate SVM probabilities inside each fit, as in the refit.
    if n_jobs is None:  # fitted one after another in this process
        call_interruptibly(search.fit, X, y, validation=(X_val, y_val))
    else:  # in worker processes, which joblib stops when an interrupt unwinds through it here
        search.fit(X, y, validation=(X_val, y_val))
    results = search.cv_results_
    return [
        {"params": params, "validation_accuracy": float(accuracy), "fit_seconds": float(seconds)}
        for params, accuracy, seconds in zip(results["param_classifier_params"], results["mean_test_score"],
                                             results["mean_fit_time"])
    ]


def time_prediction(model, X: np.ndarray, *, batch: int = 500, singles: int = 50) -> dict:
    """Milliseconds per face, features included, on one thread: batched and one face at a time.

    The one per-face timer of fer-bench (records, ``benchmarks/bench_*.py``):
    BLAS/OpenMP (``threadpool_limits``), OpenCV and a classical model's own
    workers (every ``n_jobs`` of its classifier: forests, kNN, ``local_mkl``)
    are held to one thread while it runs; ``predict_ms_single`` is the
    median over ``singles`` faces.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    X_batch = X[:batch]
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    estimator = getattr(model, "estimator_", None)
    workers = {}
    if hasattr(estimator, "get_params"):
        workers = {key: value for key, value in estimator.get_params(deep=True).items()
                   if key.endswith("n_jobs") and value not in (None, 1)}
        estimator.set_params(**{key: 1 for key in workers})
    try:
        with threadpool_limits(1):
            model.predict(X_batch[:2])  # warm-up: lazy model loads, caches
            start = time.perf_counter()
            model.predict(X_batch)
            batched = (time.perf_counter() - start) * 1000 / len(X_batch)
            times = []
            for face in X[:singles]:
                start = time.perf_counter()
                model.predict(face[None])
                times.append((time.perf_counter() - start) * 1000)
    finally:
        cv2.setNumThreads(opencv_threads)
        if workers:
            estimator.set_params(**workers)
    return {"predict_ms_per_face": batched, "predict_ms_single": float(np.median(times))}


ONE_THREAD_ENVIRONMENT = {
    "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
}
"""Environment that starts BLAS, TensorFlow and (with :data:`XLA_ONE_THREAD`) JAX on one thread."""
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def time_prediction_isolated(model, X: np.ndarray, *, batch: int = 500, singles: int = 50,
                             timeout: float = 900) -> dict:
    """:func:`time_prediction` of a saved copy of ``model`` in a fresh one-thread process.

    A deep-learning backend sizes its thread pools when it starts, and the one
    that trained a CNN in this process cannot be held to one thread afterwards
    (``threadpool_limits`` reaches BLAS and OpenMP only): timed here, the CNN
    would use every core while the classical models use one.  A fresh process
    started with :data:`ONE_THREAD_ENVIRONMENT` times it on equal terms.  If
    that process fails, the in-process figure is returned, marked
    ``predict_threads: "not limited"``.
    """
    import subprocess
    import sys

    with tempfile.TemporaryDirectory(prefix="fer-bench-timing-") as scratch:
        model_path = model.save(Path(scratch) / ("model.zip" if getattr(model, "family", "") == "deep"
                                                 else "model" + MODEL_SUFFIX))
        faces_path = Path(scratch) / "faces.npy"
        np.save(faces_path, np.asarray(X[: max(batch, singles)]))
        environment = {**os.environ, **ONE_THREAD_ENVIRONMENT}
        environment["XLA_FLAGS"] = f"{environment.get('XLA_FLAGS', '')} {XLA_ONE_THREAD}".strip()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "fer_bench.experiment.harness", "time", str(model_path), str(faces_path),
                 str(batch), str(singles)],
                env=environment, capture_output=True, text=True, timeout=timeout,
            )
            if done.returncode == 0:
                return {**json.loads(done.stdout.strip().splitlines()[-1]), "predict_threads": "one, own process"}
            failure = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        except (subprocess.TimeoutExpired, OSError, ValueError) as error:
            failure = f"{type(error).__name__}: {error}"
    timing = time_prediction(model, X, batch=batch, singles=singles)
    return {**timing, "predict_threads": "not limited", "predict_timing_error": failure}


def _timing_main(argv) -> int:
    """``python -m fer_bench.experiment.harness time MODEL FACES.npy BATCH SINGLES``: print the timing as one JSON line."""
    from ..models import load_model

    model_path, faces_path, batch, singles = argv
    model = load_model(model_path)
    print(json.dumps(time_prediction(model, np.load(faces_path), batch=int(batch), singles=int(singles))))
    return 0


# --------------------------------------------------------------------------- one cell


def run_classic_cell(
    dataset,
    features: str,
    classifier: str,
    out_dir,
    *,
    feature_params: dict | None = None,
    classifier_params: dict | None = None,
    select: bool = True,
    flip: bool = False,
    tta: str = "none",
    seed: int = 0,
    cache=None,
    log=print,
) -> dict:
    """Fit, select and score one classical cell; write its record and model.

    ``flip`` adds mirrored training faces; ``tta="flip"`` averages each
    validation and test face's probabilities with its mirror image's (the
    model keeps it: its predictions do the same).  ``cache`` is where features
    are cached (a folder or ``joblib.Memory``); without it, a temporary folder
    serves this cell alone.

    Returns the record (also written to ``out_dir/records/<cell>.json``).
    """
    feature_params = dict(feature_params or {})
    fixed = dict(classifier_params or {})
    classes = tuple(dataset.classes)
    tta = check_tta(tta)
    name = cell_id(features, classifier, flip, tta)
    out_dir = Path(out_dir)
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    # Settings that count more neighbours or centres than there are training faces are left out (said once),
    # or the cell fails here, before any extraction, saying how many faces it needs.
    n_faces = len(dataset.train) * (2 if flip else 1)
    check_features_for_classifier(features, feature_params, classifier)
    candidates, grid_note = fit_grid_to_faces(classifier, candidate_grid(classifier, fixed, select), n_faces)
    if grid_note:
        log(f"{name}: note: {grid_note}")
    if tta != "none" and not flip:
        log(f"{name}: note: test-time flipping without mirrored training faces (--flip): the mirror images "
            "may score far below the faces (HOG + LBP + landmarks with the RBF SVM: 52.9% against 60.5% on "
            "PublicTest)")
    with contextlib.ExitStack() as stack:
        # One cell still extracts each split's features once: without a cache folder, or with one that cannot
        # be written (one warning), a temporary folder serves it and its selection workers.
        if cache is None or not writable_cache_folder(getattr(cache, "location", cache)):
            cache = stack.enter_context(tempfile.TemporaryDirectory(prefix="fer-bench-features-"))
        base = ClassicModel(features, classifier, feature_params=feature_params, classifier_params=fixed,
                            classes=classes, tta=tta, random_state=seed, n_jobs=-1, memory=cache)

        train, val, test = dataset.train, dataset.val, dataset.test
        X_train, y_train = train.X, train.y
        if flip:
            X_train, y_train = np.concatenate([X_train, flip_faces(X_train)]), np.concatenate([y_train, y_train])
        # Extracted here once, into the cache the model reads, to time extraction apart from fitting.
        # Features that learn from the faces (sift_words' vocabulary) and uncached extractions can run for
        # minutes: each says when it starts and how long it took.
        extract_start = time.perf_counter()
        extractor = base.make_extractor()
        learning = [part_name for part_name, part in zip(parse_feature_spec(features), feature_parts(extractor))
                    if hasattr(part, "fitted_state_digest")]
        if learning:
            log(f"{name}: fitting {', '.join(learning)} on {len(X_train):,} {train.name} faces"
                + (" (mirrored ones included)" if flip else ""))
        extractor.fit(X_train)
        scored = [(val.name, val.X), (test.name, test.X)]
        if tta == "flip":
            scored += [(f"{val.name} mirrored", flip_faces(val.X)), (f"{test.name} mirrored", flip_faces(test.X))]
        for split, faces in [(train.name, X_train), *scored]:
            block = transform_faces(extractor, faces, memory=cache, n_jobs=-1,
                                    log=lambda message, split=split: log(f"{name}: {split}: {message}"))
            if split == train.name:
                n_features = block.shape[1]
        extract_seconds = time.perf_counter() - extract_start
        log(f"{name}: features {n_features} per face ({extract_seconds:.1f} s, cached on reuse)")

        if len(candidates) > 1:
            parallel = check_classifier_name(classifier).grid_parallel
            log(f"{name}: trying {len(candidates)} settings on {val.name}" + (", in parallel" if parallel else ""))
            selection = select_on_validation(base, candidates, X_train, y_train, val.X, val.y,
                                             n_jobs=min(len(candidates), os.cpu_count() or 1) if parallel else None,
                                             log=lambda message: log(f"{name}:   {message}"))
            best = int(np.argmax([entry["validation_accuracy"] for entry in selection]))
            log(f"{name}: refitting {selection[best]['params']} on {train.name}")
        else:
            log(f"{name}: fitting {candidates[0] or 'defaults'}")
            selection, best = None, 0
        fit_start = time.perf_counter()
        model = clone(base).set_params(classifier_params=candidates[best])
        # The features are in the cache: the fit starts no worker processes, and runs where Ctrl-C reaches it.
        call_interruptibly(model.fit, X_train, y_train, validation=(val.X, val.y))
        fit_seconds = time.perf_counter() - fit_start
        if selection is None:  # nothing to choose: the one fit is scored on the validation split
            selection = [{"params": candidates[0], "validation_accuracy": model.score(val.X, val.y),
                          "fit_seconds": fit_seconds}]
        for entry in selection:
            log(f"{name}:   {entry['params']} -> {val.name} accuracy {entry['validation_accuracy']:.4f}")
        val_accuracy = selection[best]["validation_accuracy"]
        log(f"{name}: scoring {test.name} ({len(test):,} faces" + (", and their mirror images)" if tta != "none"
                                                                     else ")"))
        probabilities = call_interruptibly(model.predict_proba, test.X)
    # The saved model extracts on one process and caches nothing, as a user's model would.
    model.set_params(n_jobs=None, memory=None)
    predicted = np.argmax(probabilities, axis=1)
    scores = classification_metrics(test.y, predicted, classes)
    log(f"{name}: timing predictions on one process")
    timing = time_prediction(model, test.X)

    record = cell_record(dataset, name, "classic", started, library_versions(), {
        "features": "+".join(parse_feature_spec(features)),
        "feature_params": feature_params,
        "n_features": int(n_features),
        "classifier": classifier,
        "classifier_params": model.classifier_params,
        "selection": selection,
        "grid_note": grid_note,
        "validation_accuracy": val_accuracy,
        "flip_augmentation": flip,
        "tta": tta,
        "seed": seed,
        "n_train": int(len(y_train)),
        "n_validation": int(len(val)),
        "n_test": int(len(test)),
        **scores,
        "fit_seconds": fit_seconds,
        "selection_seconds": float(sum(s["fit_seconds"] for s in selection)),
        "extract_seconds": extract_seconds,
        **timing,
    })
    model.set_params(metadata=model_metadata(dataset, record, scores, started, selection=selection,
                                             classifier_params=model.classifier_params, flip_augmentation=flip,
                                             tta=tta, seed=seed))
    return write_cell_outputs(out_dir, record, model, MODEL_SUFFIX, test.y, predicted, probabilities, wall_start)


def model_metadata(dataset, record: dict, scores: dict, started, **fields) -> dict:
    """The provenance a cell's saved model carries: dataset, split, the family's own ``fields``, scores, date."""
    return {
        "dataset": dataset.name,
        "dataset_key": dataset.content_key,
        "split": record["split"],
        **fields,
        "scores": {k: scores[k] for k in ("accuracy", "f1_macro", "precision_macro", "recall_macro")},
        "trained": started.isoformat(timespec="seconds"),
    }


def split_record(dataset) -> dict:
    """The split a record states: the three splits' names, how they were made (with the seed and fractions of a
    seeded split) and each split's faces per class, so the split can be checked and made again."""
    return {"train": dataset.train.name, "validation": dataset.val.name, "test": dataset.test.name,
            "method": dataset.split_method, **dataset.split_settings,
            "per_class": {split.name: dict(zip(dataset.classes, split.class_counts(len(dataset.classes)).tolist()))
                          for split in dataset.splits}}


def cell_record(dataset, name: str, family: str, started, versions: dict, fields: dict) -> dict:
    """A finished cell's record: the fields every cell shares around the family's own ``fields``.

    ``wall_seconds`` is filled in by :func:`write_cell_outputs`.
    """
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "cell": name,
        "family": family,
        "dataset": dataset.name,
        "dataset_key": dataset.content_key,
        "split": split_record(dataset),
        **fields,
        "status": "ok",
        "error": None,
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": None,
        "machine": machine_info(),
        "versions": versions,
    }


def resolve_path(run_dir, value) -> Path | None:
    """The file a record's path names, looked up in ``run_dir`` first; None if it is nowhere.

    A relative path is relative to the run folder.  An absolute path is tried
    as ``run_dir/<folder>/<file>`` first (the run folder may have moved since
    the record was written), then as it stands.
    """
    if not value:
        return None
    run_dir = Path(run_dir)
    path = Path(value)
    candidates = [run_dir / path] if not path.is_absolute() else []
    candidates += [run_dir.joinpath(*path.parts[-2:]), run_dir / path.name]
    if path.is_absolute():
        candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def write_cell_outputs(out_dir, record, model, model_suffix, y_true, y_pred, proba, wall_start) -> dict:
    """Save a finished cell's model, test predictions and record (in that order: the record last).

    Each file is written atomically and the record only after the others, so
    a record on disk always points to a complete model and predictions.
    """
    out_dir = Path(out_dir)
    name = record["cell"]
    model_path = model.save(out_dir / "models" / f"{name}{model_suffix}")
    record["predictions_path"] = str(save_predictions(out_dir / "predictions" / f"{name}.npz", y_true, y_pred,
                                                      proba, model.classes_))
    record["model_path"] = str(model_path)
    record["model_bytes"] = model_path.stat().st_size
    record["wall_seconds"] = time.perf_counter() - wall_start
    write_json_atomic(out_dir / "records" / f"{name}.json", record)
    return record


def save_predictions(path, y_true, y_pred, proba, classes) -> Path:
    """Test-split labels, predictions and probabilities of one cell (for metrics computed later)."""
    path = Path(path)
    with replacing(path, suffix=".tmp.npz") as tmp:
        np.savez_compressed(tmp, y_true=np.asarray(y_true, np.int64), y_pred=np.asarray(y_pred, np.int64),
                            proba=np.asarray(proba, np.float32), classes=np.asarray(classes))
    return path


def load_predictions(path) -> dict:
    """Arrays written by :func:`save_predictions`."""
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
              type(None): "null"}


def read_record(path) -> dict:
    """The record in ``path``: a JSON object.

    Raises
    ------
    ValueError
        The file cannot be read, is not JSON, or holds other JSON than an
        object (a list, a number); the message names the file.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ValueError(f"{path}: cannot be read ({error.strerror or error})") from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: holds {JSON_TYPES.get(type(record), 'other JSON')}, not a record (a JSON object)")
    return record


def error_record(name: str, family: str, exc: BaseException, **fields) -> dict:
    """A record for a cell that raised: status ``error`` with the message, so a sweep goes on."""
    return {
        "schema_version": RECORD_SCHEMA_VERSION,
        "cell": name,
        "family": family,
        **fields,
        "status": "error",
        "error": f"{type(exc).__name__}: {exc}",
        "traceback": traceback.format_exc(),
        "machine": machine_info(),
        "versions": library_versions(),
    }


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 6 or sys.argv[1] != "time":
        sys.exit("usage: python -m fer_bench.experiment.harness time MODEL FACES.npy BATCH SINGLES")
    sys.exit(_timing_main(sys.argv[2:]))

"""Score saved models on any labelled face dataset: ``fer-bench evaluate``.

A model trained on FER-2013 meets other datasets (CK+, JAFFE, KDEF, RAF-DB,
a lab's own photos) whose class names differ, whose images are whole photos
rather than 48x48 crops, and whose classes are not the model's.  This module
scores a model on one split of such a dataset (or all of it) and writes the
same figures a run cell records.

- **Labels** are matched by name, case-insensitively, through
  :data:`LABEL_SYNONYMS` (``anger`` is ``angry``, ``happiness`` is ``happy``,
  ...) and a user's map (``--label-map contempt=ignore,calm=neutral``).
- **Classes on one side only** are named: data classes the model lacks are
  not scored; model classes the data lacks are taken out of the model's
  answer, which is the most probable of the shared classes.  The accuracy of
  the model's unrestricted answer is reported beside it.
- **Whole photos** (``detect``): each image goes through the predict path's
  detection and alignment (:func:`fer_bench.faces.find_faces_many`) and its
  largest face is scored; images where no face is found are counted and
  listed.  Without it each image is taken as a face crop, resized as
  :mod:`fer_bench.data` loads it.

Each model x dataset gives one record and its predictions in
``OUT/evaluations/MODEL@DATASET-SPLIT[+DETECTOR].json`` and ``.npz``
(:data:`fer_bench.report.analysis.EVALUATIONS_DIR`); the folder's report
shows them as its cross-dataset section.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fer_classic.model import library_versions

from ._core import file_sha256, write_json_atomic
from .data import Split, load_dataset
from .experiment.harness import RECORD_SCHEMA_VERSION, machine_info, save_predictions
from .faces import DEFAULT_MAX_SIDE, DEFAULT_MIN_FACE, find_faces_many
from .media import MAX_IMAGE_PIXELS, InputError, read_image
from .metrics import bootstrap_intervals, classification_metrics
from .report.analysis import EVALUATIONS_DIR

IGNORE = "ignore"
"""The ``--label-map`` target that leaves a data class out of the scoring."""

LABEL_SYNONYMS = {
    "anger": "angry", "mad": "angry", "an": "angry",
    "disgusted": "disgust", "di": "disgust",
    "fearful": "fear", "afraid": "fear", "scared": "fear", "fe": "fear", "af": "fear",
    "happiness": "happy", "joy": "happy", "happy": "happy", "ha": "happy",
    "sadness": "sad", "sa": "sad",
    "surprised": "surprise", "surprize": "surprise", "su": "surprise",
    "neutrality": "neutral", "ne": "neutral",
}
"""Class names (lower case) read as a FER-2013 class, on the data's side and the model's.

The spelled-out forms are those CK+, RAF-DB and KDEF use; the two-letter
codes are JAFFE's and KDEF's file-name codes (AN, DI, FE/AF, HA, NE, SA, SU),
for class folders named after them.  Anything else (``contempt``, ``calm``)
needs ``--label-map``.
"""

DETECT_BATCH = 16
"""Photos read, searched and cropped together with ``detect``: bounds the decoded photos held at once."""


class EvaluationError(ValueError):
    """A model cannot be scored on a dataset as asked; the message says why and what to do."""


# --------------------------------------------------------------------------- labels


def canonical_label(name) -> str:
    """The name a class is matched by: lower case, synonyms (:data:`LABEL_SYNONYMS`) read as the FER-2013 name."""
    key = str(name).strip().lower()
    return LABEL_SYNONYMS.get(key, key)


def parse_label_map(text) -> dict:
    """``"contempt=ignore,Calm=neutral"`` -> ``{"contempt": "ignore", "calm": "neutral"}`` (lower case).

    Raises
    ------
    EvaluationError
        An item that is not ``DATA=MODEL``, or a data class given twice.
    """
    out = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip().lower(), value.strip().lower()
        if not sep or not key or not value:
            raise EvaluationError(f"--label-map {item.strip()!r}: write DATA_CLASS=MODEL_CLASS (or DATA_CLASS=ignore), "
                                  "comma-separated, e.g. --label-map contempt=ignore,calm=neutral")
        if key in out and out[key] != value:
            raise EvaluationError(f"--label-map maps {key!r} twice ({out[key]} and {value}); keep one")
        out[key] = value
    return out


@dataclass(frozen=True)
class ClassMatch:
    """How a dataset's classes meet a model's.

    Attributes
    ----------
    target : ndarray (n_data_classes,)
        For each data label, the index of the model class it is scored as, or -1 (not scored).
    scored : tuple of int
        Model class indices some data class maps to, in the model's order: the classes scored.
    mapping : dict
        Data class -> model class, for every data class scored.
    not_in_model : dict
        Data class -> the name it was read as, for data classes the model lacks.
    ignored : tuple of str
        Data classes mapped to ``ignore``.
    not_in_data : tuple of str
        Model classes no data class maps to.
    """

    data_classes: tuple
    model_classes: tuple
    target: np.ndarray
    scored: tuple
    mapping: dict
    not_in_model: dict
    ignored: tuple
    not_in_data: tuple

    @property
    def scored_names(self) -> tuple:
        return tuple(self.model_classes[i] for i in self.scored)


def match_classes(data_classes, model_classes, label_map=None) -> ClassMatch:
    """Match a dataset's class names to a model's (see the module docstring).

    Parameters
    ----------
    data_classes, model_classes : sequence of str
        The two class lists, in label order.
    label_map : dict, optional
        Data class -> model class or ``"ignore"``, applied before the synonyms
        (:func:`parse_label_map`).

    Raises
    ------
    EvaluationError
        A map target that is no class of the model.
    """
    data_classes = tuple(str(c) for c in data_classes)
    model_classes = tuple(str(c) for c in model_classes)
    label_map = {str(k).lower(): str(v).lower() for k, v in (label_map or {}).items()}
    model_index = {}
    for i, name in enumerate(model_classes):
        model_index.setdefault(canonical_label(name), i)
    for key, value in label_map.items():
        if value != IGNORE and canonical_label(value) not in model_index:
            raise EvaluationError(f"--label-map {key}={value}: the model has no class {value!r}; its classes are "
                                  f"{', '.join(model_classes)} (or map to 'ignore')")
    target = np.full(len(data_classes), -1, dtype=np.int64)
    mapping, not_in_model, ignored = {}, {}, []
    for d, name in enumerate(data_classes):
        wanted = label_map.get(name.lower(), name)
        if wanted == IGNORE:
            ignored.append(name)
            continue
        m = model_index.get(canonical_label(wanted))
        if m is None:
            not_in_model[name] = canonical_label(wanted)
            continue
        target[d] = m
        mapping[name] = model_classes[m]
    scored = tuple(sorted(set(target[target >= 0].tolist())))
    not_in_data = tuple(name for i, name in enumerate(model_classes) if i not in scored)
    return ClassMatch(data_classes, model_classes, target, scored, mapping, not_in_model, tuple(ignored), not_in_data)


# --------------------------------------------------------------------------- splits and faces


def select_split(dataset, split: str) -> Split:
    """The split of ``dataset`` called ``split``, or all its faces for ``"all"``.

    A split's own name (``PrivateTest``, ``validation``, ``val``) or its role
    (``train``, ``val``/``validation``, ``test``), case-insensitively.
    """
    key = str(split).strip().lower()
    if key == "all":
        parts = dataset.splits
        with_files = all(part.files or not len(part) for part in parts)  # an empty split names no files
        files = sum((tuple(part.files) for part in parts), ()) if with_files else ()
        return Split("all", np.concatenate([part.X for part in parts]), np.concatenate([part.y for part in parts]),
                     files)
    for part in dataset.splits:
        if part.name.lower() == key:
            return part
    roles = {"train": dataset.train, "val": dataset.val, "validation": dataset.val, "test": dataset.test}
    if key in roles:
        return roles[key]
    names = ", ".join(part.name for part in dataset.splits)
    raise EvaluationError(f"{dataset.source}: no split {split!r}; its splits are {names} (or all)")


def largest_faces(files, *, detector: str, min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE,
                  max_pixels: int = MAX_IMAGE_PIXELS) -> tuple:
    """The aligned 48x48 crop of the largest face in each photo, found as ``fer-bench predict`` finds faces.

    Returns
    -------
    (ndarray (k, 48, 48) uint8, ndarray (n,) bool, list)
        The crops of the photos where a face was found, which photos those
        are, and the box ``(x, y, width, height)`` of each crop.
    """
    from tqdm import tqdm

    files = list(files)
    crops, boxes, found = [], [], np.zeros(len(files), dtype=bool)
    with tqdm(total=len(files), desc=f"finding faces ({detector})", unit="img", leave=False,
              disable=None if len(files) >= 200 else True) as bar:
        for start in range(0, len(files), DETECT_BATCH):
            chunk = files[start:start + DETECT_BATCH]
            try:
                images = [read_image(path, max_pixels=max_pixels) for path in chunk]
            except InputError as error:
                raise EvaluationError(f"{error}; remove or replace it and evaluate again") from None
            for offset, faces in enumerate(find_faces_many(images, detector=detector, min_face=min_face,
                                                           max_side=max_side)):
                if faces:
                    largest = max(faces, key=lambda face: face.box[2] * face.box[3])
                    crops.append(largest.crop)
                    boxes.append(tuple(int(v) for v in largest.box))
                    found[start + offset] = True
            bar.update(len(chunk))
    X = np.stack(crops) if crops else np.zeros((0, 48, 48), dtype=np.uint8)
    return X, found, boxes


# --------------------------------------------------------------------------- one model on one dataset


@dataclass
class Evaluation:
    """One model scored on one dataset: the record and the arrays behind it."""

    record: dict
    y_true: np.ndarray
    y_pred: np.ndarray
    proba: np.ndarray


def _file_safe(text: str) -> str:
    return re.sub(r"[^\w.+-]+", "_", str(text)).strip("_") or "x"


def _relative(path, root) -> str:
    try:
        return Path(path).relative_to(root).as_posix()
    except ValueError:
        return str(path)


def evaluate_model(model, dataset, *, model_name: str, model_path=None, model_family=None, split: str = "test",
                   label_map=None, detect: str | None = None, min_face: int = DEFAULT_MIN_FACE,
                   max_side: int = DEFAULT_MAX_SIDE, n_resamples: int = 1000, seed: int = 0) -> Evaluation:
    """Score ``model`` on one split of ``dataset`` over the classes both share.

    Parameters
    ----------
    model : ClassicModel, DeepModel, OnnxModel or EnsembleModel
        Anything with ``predict_proba`` on (n, 48, 48) uint8 faces and ``classes_``.
    dataset : fer_bench.data.Dataset
        The labelled dataset.
    model_name : str
        What the record calls the model.
    split : str
        See :func:`select_split`.
    label_map : dict, optional
        See :func:`match_classes`.
    detect : str, optional
        A detector name (:data:`fer_bench.faces.DETECTORS`): score the largest
        face found in each image; None takes each image as a face crop.
    min_face, max_side : int
        The detector's smallest face and largest image side, as for ``fer-bench predict``.
    n_resamples, seed : int
        Bootstrap settings of the confidence intervals.

    Returns
    -------
    Evaluation
        The record and the scored faces' true labels, restricted answers and
        probabilities over the scored classes (renormalised), as indices into
        ``record["classes_scored"]``.

    Raises
    ------
    EvaluationError
        No class shared, a split that does not exist, ``detect`` on a dataset
        without image files, or no face left to score.
    """
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    match = match_classes(dataset.classes, model.classes_, label_map)
    if not match.scored:
        raise EvaluationError(
            f"{model_name} and {dataset.name} share no class: the data has {', '.join(dataset.classes)}, the model "
            f"{', '.join(match.model_classes)}; name the data's classes with --label-map DATA=MODEL,...")
    part = select_split(dataset, split)
    keep = match.target[part.y] >= 0
    data_counts = np.bincount(part.y, minlength=len(dataset.classes))
    n_images = len(part)
    kept = part.subset(keep)
    no_face = []
    if detect is not None:
        if len(part) and not part.files:
            raise EvaluationError(f"{dataset.source}: --detect needs the dataset's image files, and this one holds "
                                  "48x48 face crops (a CSV); evaluate it without --detect")
        X, found, _ = largest_faces(kept.files, detector=detect, min_face=min_face, max_side=max_side)
        no_face = [_relative(path, dataset.source) for path, hit in zip(kept.files, found) if not hit]
        kept = replace(kept.subset(found), X=X)
    if len(kept) == 0:
        reason = f"no face was found by {detect} in any of them" if detect else "none of its classes is scored"
        raise EvaluationError(f"{dataset.name} ({part.name}): nothing to score, {n_images} images and {reason}")

    proba = np.asarray(model.predict_proba(kept.X), dtype=np.float64)
    columns = np.asarray(match.scored)
    true_model = match.target[kept.y]                      # the true class as a model class index
    y_true = np.searchsorted(columns, true_model)          # ... and as an index into the scored classes
    restricted = proba[:, columns]
    y_pred = np.argmax(restricted, axis=1)                 # the most probable of the shared classes
    unrestricted = np.argmax(proba, axis=1)                # the model's own answer, over all its classes
    totals = restricted.sum(axis=1, keepdims=True)
    restricted = np.divide(restricted, totals, out=np.full_like(restricted, 1 / len(columns)), where=totals > 0)

    names = match.scored_names
    scores = classification_metrics(y_true, y_pred, names)
    ci = bootstrap_intervals(y_true, y_pred, len(names), n_resamples=n_resamples, seed=seed)
    metadata = getattr(model, "metadata", None) or {}
    notes = []
    trained_key = metadata.get("dataset_key")
    if trained_key is not None and trained_key == dataset.content_key and part.name != dataset.test.name:
        notes.append(f"{model_name} was trained on this dataset; {part.name} holds faces it was fitted or "
                     "selected on, so the score is not a test score")
    record = {
        "schema_version": RECORD_SCHEMA_VERSION,
        "kind": "evaluation",
        "name": f"{_file_safe(model_name)}@{_file_safe(dataset.name)}-{_file_safe(part.name)}"
                + (f"+{detect}" if detect else ""),  # found faces and whole images are two evaluations
        "model": model_name,
        "model_path": None if model_path is None else str(model_path),
        "model_sha256": file_sha256(model_path) if model_path is not None and Path(model_path).is_file() else None,
        "model_family": model_family or getattr(model, "family", None),
        "model_trained_on": {"dataset": metadata.get("dataset"), "dataset_key": trained_key,
                             "test": (metadata.get("split") or {}).get("test")},
        "dataset": dataset.name,
        "dataset_key": dataset.content_key,
        "dataset_source": dataset.source,
        "split": part.name,
        "split_method": dataset.split_method,
        "n": int(len(y_true)),
        "n_images": int(n_images),
        "accuracy": scores["accuracy"],
        "accuracy_unrestricted": float(np.mean(unrestricted == true_model)),
        "accuracy_ci": ci["accuracy"],
        "f1_macro_ci": ci["f1_macro"],
        **{key: value for key, value in scores.items() if key != "accuracy"},
        "classes_scored": list(names),
        "classes_dropped": {
            "not_in_model": {name: int(data_counts[dataset.classes.index(name)])
                             for name in match.not_in_model},
            "ignored": {name: int(data_counts[dataset.classes.index(name)]) for name in match.ignored},
            "not_in_data": list(match.not_in_data),
        },
        "label_map": dict(match.mapping),
        "detector": detect,
        "min_face": min_face if detect else None,
        "max_side": max_side if detect else None,
        "n_no_face": len(no_face),
        "no_face": no_face,
        "notes": notes,
        "seed": seed,
        "status": "ok",
        "error": None,
        "started": started.isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - wall_start,
        "machine": machine_info(),
        "versions": library_versions(),
    }
    return Evaluation(record, y_true, y_pred, restricted)


# What makes two evaluations of one name the same scoring: a repeat replaces its record, anything else keeps it.
SAME_SCORING = ("model_sha256", "dataset_key", "split", "label_map", "detector", "min_face", "max_side", "seed")
EARLIER_DIR = "earlier"


def write_evaluation(out_dir, evaluation: Evaluation, *, log=None) -> dict:
    """Write an evaluation's predictions and then its record (``OUT/evaluations/NAME.npz`` and ``.json``).

    The record's ``predictions_path`` is relative to ``out_dir``, so the folder can move.  A record of
    the same name left by another scoring (another model file under that name, other data or settings:
    :data:`SAME_SCORING`) is not overwritten: it and its predictions move to
    ``evaluations/earlier/NAME.STARTED.*``, which ``log`` is told.  A repeat of the same scoring replaces it.
    """
    out_dir = Path(out_dir)
    record = dict(evaluation.record)
    folder = out_dir / EVALUATIONS_DIR
    name = record["name"]
    kept = _keep_earlier(folder, name, record)
    if kept is not None and log is not None:
        log(f"note: {name}: the earlier evaluation under this name scored another model file, data or settings; "
            f"kept as {EVALUATIONS_DIR}/{kept}")
    save_predictions(folder / f"{name}.npz", evaluation.y_true, evaluation.y_pred, evaluation.proba,
                     record["classes_scored"])
    record["predictions_path"] = f"{EVALUATIONS_DIR}/{name}.npz"
    write_json_atomic(folder / f"{name}.json", record)
    return record


def _keep_earlier(folder: Path, name: str, record: dict) -> str | None:
    """Move ``folder/NAME.json`` (and its ``.npz``) under ``earlier/`` unless it is the same scoring as ``record``;
    the moved record's path relative to ``folder``, or None when nothing moved."""
    path = folder / f"{name}.json"
    if not path.exists():
        return None
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        earlier = None
    if not isinstance(earlier, dict):
        earlier = None
    elif earlier.get("model_sha256") is not None and \
            all(earlier.get(key, object()) == record.get(key) for key in SAME_SCORING):
        return None
    target = folder / EARLIER_DIR
    target.mkdir(exist_ok=True)
    stamp = _file_safe(str((earlier or {}).get("started") or "unknown"))
    stem, number = f"{name}.{stamp}", 1
    while (target / f"{stem}.json").exists():
        number += 1
        stem = f"{name}.{stamp}.{number}"
    predictions = folder / f"{name}.npz"
    if predictions.exists():
        predictions.replace(target / f"{stem}.npz")
        if earlier is not None:
            earlier["predictions_path"] = f"{EVALUATIONS_DIR}/{EARLIER_DIR}/{stem}.npz"
    if earlier is not None:
        write_json_atomic(target / f"{stem}.json", earlier)
        path.unlink()
    else:  # unreadable: kept as it is
        path.replace(target / f"{stem}.json")
    return f"{EARLIER_DIR}/{stem}.json"


# --------------------------------------------------------------------------- many models on many datasets


def model_names(models) -> list:
    """What the records call each model: a shipped model's name, or a file's stem (with its run folder if two clash)."""
    paths = [Path(str(model)) for model in models]
    names = [path.stem if path.is_file() else str(model) for path, model in zip(paths, models)]
    for i, name in enumerate(names):
        if names.count(name) > 1 and paths[i].is_file():
            parent = paths[i].resolve().parent
            run = parent.parent if parent.name == "models" else parent
            names[i] = f"{run.name}-{name}"
    return names


def evaluate_models(models, data_paths, out_dir, *, split: str = "test", label_map=None, detect=None,
                    min_face: int = DEFAULT_MIN_FACE, max_side: int = DEFAULT_MAX_SIDE, cache_dir=None,
                    seed: int = 0, n_resamples: int = 1000, trust: bool = False, log=None) -> list:
    """Score every model on every dataset; write each record under ``out_dir``; return the records in order.

    Parameters
    ----------
    models : list
        Model files or shipped model names (:func:`fer_bench.models.load_model`).
    data_paths : list of path
        Datasets :func:`fer_bench.data.load_dataset` reads.
    out_dir : path
        Where ``evaluations/`` is written (a run folder, or a new one); checked first
        (:func:`fer_bench.outputs.output_folder`: not a file, not inside a dataset folder, writable).
    split, label_map, detect, min_face, max_side, n_resamples, seed
        See :func:`evaluate_model`; ``seed`` is also the seed of a class-folder dataset's split.
    cache_dir : path, optional
        Cache of decoded arrays (:func:`fer_bench.data.load_dataset`).
    trust : bool
        Allow joblib (pickle) model files.
    log : callable, optional
        Receives progress and notes.
    """
    from .models import load_model, model_family, resolve_model
    from .outputs import output_folder

    log = log or (lambda message: None)
    if not models:
        raise EvaluationError("give at least one model (a model file or a shipped model's name)")
    # Before any model or dataset is loaded: a folder that cannot take the records fails now, not after the scoring.
    output_folder(out_dir, "out_dir", data=data_paths, subfolders=(EVALUATIONS_DIR,))
    loaded = []
    for name, model in zip(model_names(models), models):
        path = resolve_model(model)
        loaded.append((name, path, model_family(path), load_model(path, trust=trust)))
    records = []
    for data_path in data_paths:
        dataset = load_dataset(data_path, cache_dir=cache_dir, seed=seed)
        for key in sorted(set(label_map or {}) - {c.lower() for c in dataset.classes}):
            log(f"note: --label-map {key}: {dataset.name} has no class {key!r} (its classes: "
                f"{', '.join(dataset.classes)})")
        for name, path, family, model in loaded:
            log(f"{name}: scoring on {dataset.name} ({split})" + (f", faces found by {detect}" if detect else ""))
            evaluation = evaluate_model(model, dataset, model_name=name, model_path=path, model_family=family,
                                        split=split, label_map=label_map, detect=detect, min_face=min_face,
                                        max_side=max_side, n_resamples=n_resamples, seed=seed)
            records.append(write_evaluation(out_dir, evaluation, log=log))
    return records


# --------------------------------------------------------------------------- output


SUMMARY_FIELDS = ("model", "dataset", "split", "n", "accuracy", "accuracy_unrestricted", "accuracy_ci", "f1_macro",
                  "classes_scored", "classes_dropped", "per_class", "detector", "n_no_face", "no_face")
"""The fields of ``fer-bench evaluate --json``: one JSON object per model x dataset."""


def summary(record: dict) -> dict:
    """The ``--json`` object of one evaluation record."""
    return {key: record.get(key) for key in SUMMARY_FIELDS}


def dropped_text(record: dict) -> str:
    """The classes left out of one evaluation, in words ('' when none)."""
    dropped = record.get("classes_dropped") or {}
    parts = []
    if dropped.get("not_in_model"):
        parts.append("data classes the model lacks, not scored: "
                     + ", ".join(f"{name} ({n:,} images)" for name, n in dropped["not_in_model"].items()))
    if dropped.get("ignored"):
        parts.append("ignored by --label-map: " + ", ".join(f"{name} ({n:,} images)"
                                                           for name, n in dropped["ignored"].items()))
    if dropped.get("not_in_data"):
        parts.append(f"model classes the data lacks: {', '.join(dropped['not_in_data'])} (answers restricted to "
                     f"the {len(record.get('classes_scored') or [])} shared classes)")
    return "; ".join(parts)


def format_evaluations(records, *, shown_no_face: int = 10) -> str:
    """A text table of evaluation records, then what each left out and where no face was found."""
    def pct(value):
        return "–" if value is None else f"{100 * value:.1f}%"

    rows = [("model", "dataset", "split", "faces", "accuracy [95% CI]", "unrestricted", "macro F1", "no face")]
    for r in records:
        ci = r.get("accuracy_ci") or [None, None]
        interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci[0] is not None else ""
        rows.append((r["model"], r["dataset"], r["split"], f"{r['n']:,}", pct(r["accuracy"]) + interval,
                     pct(r.get("accuracy_unrestricted")), pct(r.get("f1_macro")),
                     f"{r['n_no_face']:,}" if r.get("detector") else "–"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) if i < 3 else cell.rjust(width)
                       for i, (cell, width) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for r in records:
        heading = f"{r['model']} on {r['dataset']} ({r['split']})"
        lines.append(f"{heading}: scored {', '.join(r['classes_scored'])}")
        text = dropped_text(r)
        if text:
            lines.append(f"  {text}")
        if r.get("n_no_face"):
            shown = ", ".join(r["no_face"][:shown_no_face])
            more = f", ... ({r['n_no_face'] - shown_no_face:,} more in the record)" if r["n_no_face"] > shown_no_face \
                else ""
            lines.append(f"  no face found by {r['detector']} in {r['n_no_face']:,} of "
                         f"{r['n'] + r['n_no_face']:,} images (not scored): {shown}{more}")
        for note in r.get("notes") or []:
            lines.append(f"  note: {note}")
    return "\n".join(lines)

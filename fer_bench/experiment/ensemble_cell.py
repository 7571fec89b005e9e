"""The ensemble cell: average finished cells' models, weights chosen on the validation split, scored on test.

An ensemble of CNNs and a *fusion* of classical and deep models are both an
:class:`fer_bench.ensemble.EnsembleModel` of finished cells of the same run
folder, or of shipped models (``shipped:cnn``: the models that come with
fer-bench, trained on the same split), or both.  The cell writes the record
every cell writes (so the report lists it beside its parts), plus its members,
their weights, each member's accuracy and McNemar's test against its best
member on the test split.  A shipped member is saved as a reference to the
shipped file (checked by its SHA-256 on loading), not as a copy.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._core import array_digest, file_sha256, load_cached_arrays, save_cached_arrays
from ..ensemble import SHIPPED_PREFIX, EnsembleModel
from ..metrics import classification_metrics, mcnemar_test
from ..models import load_model, shipped_models
from .harness import cell_record, read_record, resolve_path, time_prediction_isolated, write_cell_outputs


def shipped_member_record(cell: str) -> dict:
    """The record of the shipped model ``cell`` names (``shipped:NAME``), shaped as a finished cell's."""
    name = cell[len(SHIPPED_PREFIX):]
    shipped = {record["name"]: record for record in shipped_models()}
    if name not in shipped:
        raise ValueError(f"no shipped model named {name!r} (shipped: {', '.join(sorted(shipped)) or 'none'}); "
                         f"`fer-bench models` lists them")
    record = shipped[name]
    return {**record, "cell": cell, "shipped": name, "model_path": record["path"], "status": "ok"}


def member_records(out_dir, cells) -> list:
    """The finished records of ``cells`` in the run folder (``shipped:NAME``: a shipped model's record).

    An unfinished or failed cell, or an unknown shipped model, is an error naming it.
    """
    records = []
    for cell in cells:
        if cell.startswith(SHIPPED_PREFIX):
            records.append(shipped_member_record(cell))
            continue
        path = Path(out_dir) / "records" / f"{cell}.json"
        if not path.is_file():
            raise ValueError(f"cell {cell} has no finished record in {out_dir}; run it first")
        try:
            record = read_record(path)
        except ValueError as error:
            raise ValueError(f"cell {cell}: {error}; run the cell again") from None
        if record.get("status") != "ok":
            raise ValueError(f"cell {cell} failed ({record.get('error')}); an ensemble needs finished cells")
        records.append(record)
    return records


def member_model_path(out_dir, record) -> Path | None:
    """The model file of a member's record: a shipped model's own file, or a cell's model in the run folder."""
    return Path(record["model_path"]) if "shipped" in record else resolve_path(out_dir, record["model_path"])


MEMBER_PROBABILITIES_DIR = "predictions/members"
"""Where a run folder keeps its members' probabilities on the faces an ensemble scored them on."""


def member_probabilities(out_dir, cells, paths, members, faces, *, log=None) -> list:
    """Each member's probabilities on ``faces``, each computed once per model file and set of faces.

    Stored as ``OUT/predictions/members/CELL.MODEL.FACES.npz`` (the first 16
    hex digits of the model file's and the faces' SHA-256) through the
    project's cache files (:func:`fer_bench._core.save_cached_arrays`: plain
    arrays, checked against their digests on reading), so weighing other sets
    of the same cells, or the same set again, scores no member twice.  A file
    that does not match is computed again.
    """
    folder = Path(out_dir) / MEMBER_PROBABILITIES_DIR
    faces_key = array_digest(faces)
    out = []
    for cell, path, member in zip(cells, paths, members):
        model_key = file_sha256(path)
        stored = folder / f"{cell.replace(':', '-')}.{model_key[:16]}.{faces_key[:16]}.npz"
        record = {"member_probabilities": cell, "model_sha256": model_key, "faces_sha256": faces_key}
        arrays = load_cached_arrays(stored, record)
        if arrays is None:
            if log is not None:
                log(f"{cell}: scoring {len(faces):,} faces")
            arrays = {"probabilities": np.asarray(member.predict_proba(faces), dtype=np.float64)}
            folder.mkdir(parents=True, exist_ok=True)
            save_cached_arrays(stored, arrays, record)
        out.append(arrays["probabilities"])
    return out


def run_ensemble_cell(dataset, name: str, cells, out_dir, *, log=print) -> dict:
    """Fit the weights of the ensemble of ``cells`` on the validation split and score it on the test split.

    Parameters
    ----------
    dataset : fer_bench.data.Dataset
        The split the member cells were trained on (checked by content key).
    name : str
        The cell's name, e.g. ``ensemble-cnn`` or ``fusion``.
    cells : sequence of str
        Finished cells of ``out_dir``, or shipped models as ``shipped:NAME``,
        to combine (at least two).
    out_dir : path
        The run folder.
    log : callable
        Receives one-line progress messages.

    Returns
    -------
    dict
        The record, also written to ``out_dir/records/<name>.json``.
    """
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    out_dir = Path(out_dir)
    records = member_records(out_dir, cells)
    for record in records:
        if record.get("dataset_key") != dataset.content_key:
            raise ValueError(f"cell {record['cell']} was trained on other data ({record.get('dataset_key')}) "
                             f"than {dataset.name} ({dataset.content_key})")
    members, paths, shipped = [], [], {}
    for record in records:
        path = member_model_path(out_dir, record)
        if "shipped" in record:
            shipped[record["cell"]] = (record["shipped"], path)
        if path is None:
            raise ValueError(f"cell {record['cell']}: its model {record['model_path']} is not in {out_dir}")
        members.append(load_model(path))
        paths.append(path)
    model = EnsembleModel(members, names=[record["cell"] for record in records], shipped=shipped)
    val, test = dataset.val, dataset.test
    log(f"{name}: weighing {', '.join(model.names)} on {val.name} ({len(val):,} faces)")
    fit_start = time.perf_counter()
    val_probabilities = member_probabilities(out_dir, model.names, paths, members, val.X, log=log)
    model.fit(None, val.y, probabilities=val_probabilities)
    fit_seconds = time.perf_counter() - fit_start
    member_validation = {cell: float(np.mean(np.argmax(p, axis=1) == val.y))
                         for cell, p in zip(model.names, val_probabilities)}

    test_probabilities = member_probabilities(out_dir, model.names, paths, members, test.X, log=log)
    probabilities = model.combine(test_probabilities)
    predicted = np.argmax(probabilities, axis=1)
    scores = classification_metrics(test.y, predicted, tuple(model.classes_))
    member_predictions = {cell: np.argmax(p, axis=1) for cell, p in zip(model.names, test_probabilities)}
    member_test = {cell: float(np.mean(predicted_by == test.y)) for cell, predicted_by in member_predictions.items()}
    # The best member is the one the validation split ranks first, measured here from the
    # probabilities just computed (a shipped model's record may not hold its validation score).
    best_member = max(model.names, key=member_validation.get)
    versus_best = mcnemar_test(test.y, predicted, member_predictions[best_member])
    log(f"{name}: weights {', '.join(f'{w:.2f}' for w in model.weights_)}; {test.name} accuracy "
        f"{scores['accuracy']:.4f} (best member {best_member}: "
        f"{np.mean(member_predictions[best_member] == test.y):.4f}, McNemar p = {versus_best['p_value']:.3g})")
    log(f"{name}: timing predictions in a one-thread process")
    timing = time_prediction_isolated(model, test.X)
    families = {record["family"] for record in records}
    # An ensemble of CNNs is a deep model (and so is one of classical models, classical): the verdict
    # compares it with the other family.  One that mixes the two is a fusion, a family of its own.
    family = families.pop() if len(families) == 1 else "fusion"
    seeds = [record.get("seed") for record in records]
    record = cell_record(dataset, name, family, started, {}, {
        "ensemble": True,
        "features": "+".join(record.get("features", "pixels") for record in records),
        "feature_params": {},
        "classifier": name,
        "classifier_params": {"members": list(model.names)},
        "members": list(model.names),
        "member_families": [record["family"] for record in records],
        "weights": model.weights_.tolist(),
        "chosen_params": {"weights": model.weights_.tolist()},
        "validation_accuracy": model.validation_accuracy_,
        "member_validation_accuracies": member_validation,
        "member_accuracies": member_test,
        "shipped_members": {cell: shipped_name for cell, (shipped_name, _) in shipped.items()},
        "best_member": best_member,
        "mcnemar_vs_best_member": versus_best,
        # One seed when the members share it; members trained with several seeds have none in common.
        "seed": seeds[0] if len(set(seeds)) == 1 else None,
        "member_seeds": seeds,
        "n_train": max(record.get("n_train") or 0 for record in records),
        "n_validation": int(len(val)),
        "n_test": int(len(test)),
        **scores,
        "fit_seconds": float(sum(record.get("fit_seconds") or 0 for record in records) + fit_seconds),
        "selection_seconds": fit_seconds,
        "extract_seconds": 0.0,
        **timing,
    })
    model.metadata = {"dataset": dataset.name, "dataset_key": dataset.content_key, "members": list(model.names),
                      "weights": model.weights_.tolist(), "validation_accuracy": model.validation_accuracy_,
                      "scores": {key: scores[key] for key in ("accuracy", "f1_macro")}}
    return write_cell_outputs(out_dir, record, model, ".zip", test.y, predicted, probabilities, wall_start)

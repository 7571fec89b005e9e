"""Run a grid of cells on one dataset and split, resumably.

Each finished cell's record and model are written atomically, so an
interrupted sweep loses at most the cell in progress.  A rerun skips every
cell whose record finished with the same settings and reruns failed ones.  A
cell that raises becomes a record with ``status="error"``; the sweep goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

from .harness import FeatureCache, cell_id, error_record, run_classic_cell, write_json_atomic


def cell_config(dataset, features, classifier, *, feature_params, classifier_params, select, flip, seed) -> dict:
    """The settings that decide a cell's result; a finished record with equal settings is reused."""
    return {
        "dataset_key": dataset.content_key,
        "features": features,
        "feature_params": feature_params,
        "classifier": classifier,
        "fixed_params": classifier_params,
        "select": select,
        "flip": flip,
        "seed": seed,
    }


def finished_record(path: Path, config: dict) -> dict | None:
    """The record at ``path`` if it finished with ``config``; else None."""
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") != "ok" or record.get("config") != json.loads(json.dumps(config)):
        return None
    return record


def run_sweep(
    *,
    data_path,
    features,
    classifiers,
    out_dir,
    cache_dir,
    seed=0,
    classifier_params=None,
    feature_params=None,
    select=True,
    flip=False,
    force=False,
    log=print,
    dataset=None,
) -> list:
    """Run every (features, classifier) cell; return their records in grid order."""
    from .datasets import load_dataset

    classifier_params = dict(classifier_params or {})
    feature_params = dict(feature_params or {})
    if dataset is None:
        dataset = load_dataset(data_path, cache_dir=cache_dir, seed=seed)
    log(f"{dataset.name}: {dataset.split_method}")
    log(f"  fit on {dataset.train.name} ({len(dataset.train):,}), select on {dataset.val.name} "
        f"({len(dataset.val):,}), score on {dataset.test.name} ({len(dataset.test):,})")
    out_dir = Path(out_dir)
    cache = FeatureCache(Path(cache_dir) / "features" if cache_dir else None)
    cells = [(f, c) for f in features for c in classifiers]
    records = []
    for number, (spec, classifier) in enumerate(cells, start=1):
        name = cell_id(spec, classifier)
        relevant = {k: v for k, v in feature_params.items() if k in spec.split("+")}
        config = cell_config(dataset, spec, classifier, feature_params=relevant, classifier_params=classifier_params,
                             select=select, flip=flip, seed=seed)
        path = out_dir / "records" / f"{name}.json"
        done = None if force else finished_record(path, config)
        if done is not None:
            log(f"[{number}/{len(cells)}] {name}: finished earlier, skipped (accuracy {done['accuracy']:.4f})")
            records.append(done)
            continue
        log(f"[{number}/{len(cells)}] {name}")
        try:
            record = run_classic_cell(
                dataset, spec, classifier, out_dir, feature_params=relevant, classifier_params=classifier_params,
                select=select, flip=flip, seed=seed, cache=cache, log=log,
            )
            log(f"[{number}/{len(cells)}] {name}: {dataset.test.name} accuracy {record['accuracy']:.4f}, "
                f"macro F1 {record['f1_macro']:.4f}")
        except (KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # one failed cell must not end the sweep
            record = error_record(name, "classic", exc, dataset=dataset.name, features=spec, classifier=classifier)
            log(f"[{number}/{len(cells)}] {name}: failed: {record['error']}")
        record["config"] = config
        write_json_atomic(path, record)
        records.append(record)
    return records

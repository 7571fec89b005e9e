"""Put a trained run cell's model into ``fer_bench/shipped/`` with the record of how it was made.

::

    python -m fer_bench.shipping RUN_DIR CELL NAME --data DATA --command "fer-bench run ..." \\
        --description "..." [--default] [--onnx] [--shipped-member CELL=NAME ...]

The model file is copied (with ``--onnx``, a Keras CNN, or an ensemble's Keras
CNN members, is exported to ONNX, so it runs without TensorFlow), then scored
again from the copy on the run's test split: the shipped record holds that
score, which must equal the run record's (a mismatch stops the shipping).  The record also holds the command
that trained the model, the code commit, the dataset's content key, the
confusion matrix and the prediction cost.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from ._core import write_json_atomic
from .experiment.harness import resolve_path
from .models import SHIPPED_DIR, load_model, shipped_file

RECORD_FIELDS = ("cell", "family", "dataset", "dataset_key", "split", "seed", "member_seeds", "n_train", "n_test",
                 "features", "feature_params", "classifier", "classifier_params", "chosen_params", "arch", "tta",
                 "best_epoch", "epochs_run", "fit_seconds", "predict_ms_per_face", "predict_ms_single",
                 "predict_threads", "members", "member_families", "weights", "validation_accuracy", "best_member",
                 "mcnemar_vs_best_member", "accuracy", "f1_macro", "precision_macro", "recall_macro", "per_class",
                 "confusion_matrix", "started", "versions")
"""Fields of the run record that the shipped record keeps."""

TOLERANCE = 0.0005
"""Largest difference (a fraction: 0.05 point) allowed between the run's and the shipped file's accuracy."""


def git_commit(folder) -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10)
    except OSError:
        return None
    return done.stdout.strip() or None


def with_onnx_members(ensemble, skip=()):
    """The same ensemble with each Keras CNN member exported to ONNX (so it runs without TensorFlow).

    Members named in ``skip`` are kept as they are.
    """
    import tempfile

    from fer_deep.onnx_model import OnnxModel, export_onnx

    from .ensemble import EnsembleModel

    members = []
    with tempfile.TemporaryDirectory(prefix="fer-ship-") as scratch:
        for index, (name, member) in enumerate(zip(ensemble.names, ensemble.members)):
            if (member.family == "deep" and getattr(member, "runtime", None) != "onnxruntime" and name not in skip
                    and name not in ensemble.shipped):
                member = OnnxModel.load(export_onnx(member, Path(scratch) / f"{index}.onnx"))
            members.append(member)
    converted = EnsembleModel(members, names=ensemble.names, weights=ensemble.weights_, metadata=ensemble.metadata,
                              shipped=ensemble.shipped)
    converted.validation_accuracy_ = getattr(ensemble, "validation_accuracy_", None)
    return converted


def runtime_of(model) -> str:
    """What runs ``model``: onnxruntime, keras or scikit-learn (an ensemble: its members', joined by +)."""
    if model.family == "ensemble":
        return " + ".join(dict.fromkeys(runtime_of(member) for member in model.members))
    return getattr(model, "runtime", None) or ("keras" if model.family == "deep" else "scikit-learn")


def ship(run_dir, cell: str, name: str, *, data, command: str, description: str, default: bool = False,
         onnx: bool = False, commit: str | None = None, shipped_members: dict | None = None) -> dict:
    """Copy ``RUN_DIR/models/<cell>.*`` to the shipped folder as ``name`` and write its record.

    Returns
    -------
    dict
        The shipped record.
    """
    from .data import load_dataset
    from .metrics import classification_metrics

    run_dir = Path(run_dir)
    shipped_members = dict(shipped_members or {})
    record = json.loads((run_dir / "records" / f"{cell}.json").read_text())
    source = resolve_path(run_dir, record["model_path"])
    if source is None:
        raise FileNotFoundError(f"{record['model_path']}: cell {cell}'s model is not in {run_dir}")
    SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
    if record["family"] in ("ensemble", "fusion"):
        ensemble = load_model(source)
        # Members the ensemble was built on as shipped models (shipped:NAME) stay references too.
        shipped_members = {**{member: shipped for member, (shipped, _) in ensemble.shipped.items()},
                           **shipped_members}
        if onnx:
            ensemble = with_onnx_members(ensemble, skip=shipped_members)
        target = ensemble.save(SHIPPED_DIR / f"{name}.zip", shipped_members={
            member: (shipped, shipped_file(shipped)) for member, shipped in shipped_members.items()})
    elif onnx:
        from fer_deep.onnx_model import export_onnx

        target = export_onnx(load_model(source), SHIPPED_DIR / f"{name}.onnx")
    elif record["family"] == "classic":  # saved again: compressed, in this version's format
        target = load_model(source).save(SHIPPED_DIR / f"{name}.skops")
    else:
        target = SHIPPED_DIR / f"{name}{source.suffix}"
        shutil.copyfile(source, target)

    dataset = load_dataset(data)
    if dataset.content_key != record["dataset_key"]:
        raise SystemExit(f"{data} holds other faces than the run ({dataset.content_key} != {record['dataset_key']})")
    shipped_model = load_model(target)
    test = dataset.test
    proba = shipped_model.predict_proba(test.X)
    labels = shipped_model.predict(test.X)
    names = np.asarray(shipped_model.classes_)
    if not np.array_equal(labels, names[proba.argmax(axis=1)]):
        raise SystemExit(f"{target}: predict and the argmax of predict_proba disagree")
    index = {label: i for i, label in enumerate(names)}
    scores = classification_metrics(test.y, np.array([index[label] for label in labels]), tuple(names))
    if abs(scores["accuracy"] - record["accuracy"]) > TOLERANCE:
        raise SystemExit(f"{target}: scores {scores['accuracy']:.4%} on {test.name}, the run recorded "
                         f"{record['accuracy']:.4%}")
    shipped = {
        "name": name,
        "family": record["family"],
        "file": target.name,
        "default": bool(default),
        "description": description,
        "command": command,
        "commit": commit or record.get("git_commit") or git_commit(Path(__file__).parent),
        "runtime": runtime_of(shipped_model),
        "shipped_members": shipped_members,
        "test": test.name,
        **{key: record[key] for key in RECORD_FIELDS if key in record},
        "accuracy": scores["accuracy"],
        "f1_macro": scores["f1_macro"],
        "confusion_matrix": scores["confusion_matrix"],
        "bytes": target.stat().st_size,
    }
    if default:  # one default: the others lose the mark
        for other in SHIPPED_DIR.glob("*.json"):
            info = json.loads(other.read_text())
            if info.get("default") and info["name"] != name:
                info["default"] = False
                write_json_atomic(other, info, indent=1)
    write_json_atomic(SHIPPED_DIR / f"{name}.json", shipped, indent=1)
    return shipped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fer_bench.shipping", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("cell")
    parser.add_argument("name")
    parser.add_argument("--data", required=True, help="The dataset the run used (its content key is checked).")
    parser.add_argument("--command", required=True, help="The command that trained the model.")
    parser.add_argument("--description", required=True)
    parser.add_argument("--default", action="store_true", help="Make it the model predict uses by default.")
    parser.add_argument("--shipped-member", action="append", default=[], metavar="CELL=NAME",
                        help="An ensemble's member that is the shipped model NAME: the shipped ensemble refers to "
                             "that file (checked by its SHA-256) instead of holding a copy.")
    parser.add_argument("--onnx", action="store_true", help="Export a Keras CNN (or an ensemble's CNN members) to ONNX.")
    args = parser.parse_args(argv)
    links = dict(item.split("=", 1) for item in args.shipped_member if "=" in item)
    if len(links) != len(args.shipped_member):
        parser.error("--shipped-member takes CELL=NAME, e.g. cnn-vgg_cpu=cnn")
    shipped = ship(args.run_dir, args.cell, args.name, data=args.data, command=args.command,
                   description=args.description, default=args.default, onnx=args.onnx, shipped_members=links)
    print(f"{shipped['name']}: {shipped['file']}, {shipped['accuracy']:.2%} on {shipped['test']}, "
          f"{shipped['bytes'] / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

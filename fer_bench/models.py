"""Load any saved fer-bench model, classical or deep, from its file alone or by a shipped model's name.

- A classical model is a skops file (:class:`fer_classic.model.ClassicModel`;
  a joblib file of the first format loads only when trusted).
- A deep model is a zip holding a Keras model and its metadata
  (:class:`fer_deep.model.DeepModel`), or an ONNX file exported from one
  (:class:`fer_deep.onnx_model.OnnxModel`, run by ONNX Runtime without Keras).
- An ensemble is a zip holding its members and their weights
  (:class:`fer_bench.ensemble.EnsembleModel`).

:func:`load_model` tells them apart by their content (an ONNX file by its
suffix), not their name, and imports the deep path only for a Keras file, so
the classical and ONNX paths work where Keras is not installed.

Shipped models live in ``fer_bench/shipped/``: each is a model file beside a
JSON record (name, family, file, how it was trained, its PrivateTest figures).
:func:`shipped_models` lists them; a shipped model's name works wherever a
model path does.
"""

from __future__ import annotations

import json
from pathlib import Path

from fer_classic.model import ClassicModel, ModelFileError

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
"""Where the models that ship with fer-bench and their records are."""


def shipped_models() -> list:
    """The shipped models' records, default first, each with ``path`` (the model file) filled in.

    Returns
    -------
    list of dict
        At least ``name``, ``family``, ``path``, ``accuracy``, ``default``.
    """
    records = []
    for record_path in sorted(SHIPPED_DIR.glob("*.json")):
        record = json.loads(record_path.read_text())
        record["path"] = str(SHIPPED_DIR / record["file"])
        records.append(record)
    return sorted(records, key=lambda record: (not record.get("default", False), record["name"]))


def default_model_name() -> str:
    """Name of the shipped model that ``fer-bench predict`` uses when given none."""
    models = shipped_models()
    if not models:
        raise ModelFileError("no shipped model is installed; give a model file (train one with `fer-bench run`)")
    return models[0]["name"]


def shipped_file(name: str) -> Path:
    """The file of shipped model ``name``; a ``ValueError`` naming the shipped models if there is none."""
    records = shipped_models()
    for record in records:
        if record["name"] == name:
            return Path(record["path"])
    raise ValueError(f"no shipped model named {name!r} (shipped: {', '.join(r['name'] for r in records) or 'none'})")


def resolve_model(name_or_path) -> Path:
    """The model file of a path or a shipped model's name.

    An existing file wins over a shipped name; a name that is neither is an
    error listing the shipped names.
    """
    path = Path(name_or_path)
    if path.is_file():
        return path
    try:
        return shipped_file(str(name_or_path))
    except ValueError:
        names = ", ".join(record["name"] for record in shipped_models()) or "none installed"
        raise ModelFileError(f"{name_or_path}: no such model file, nor a shipped model's name (shipped: {names})") \
            from None


def model_family(path) -> str:
    """``"classic"``, ``"deep"``, ``"onnx"`` or ``"ensemble"``: which kind of fer-bench model file ``path`` is.

    Raises
    ------
    fer_classic.model.ModelFileError
        If there is no file at ``path``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    # Imported here, not at the top: fer_deep.model needs no Keras to read a
    # file's metadata, but this module should not even load fer_deep for a
    # classical model.
    from fer_deep.model import is_deep_model_file
    from fer_deep.onnx_model import is_onnx_model_file

    from .ensemble import is_ensemble_file

    if is_onnx_model_file(path):
        return "onnx"
    if is_ensemble_file(path):
        return "ensemble"
    return "deep" if is_deep_model_file(path) else "classic"


def load_model(name_or_path, *, trust: bool = False, threads: int | None = None):
    """Load a saved model of any family, by path or by a shipped model's name.

    Parameters
    ----------
    name_or_path : path or str
        A file written by ``ClassicModel.save``, ``DeepModel.save``,
        ``EnsembleModel.save`` or ``fer-bench export --format onnx``, or the
        name of a shipped model (``fer-bench models`` lists them).
    trust : bool
        Passed on to the loaders of classical models (and an ensemble's
        members): allow joblib (pickle) files, which can run code.
    threads : int, optional
        Threads an ONNX model may use (its default: every core).

    Returns
    -------
    ClassicModel, DeepModel, OnnxModel or EnsembleModel
        All offer ``predict``, ``predict_proba``, ``classes_`` and ``metadata``;
        ``model.family`` is ``"classic"``, ``"deep"`` or ``"ensemble"``.

    Raises
    ------
    fer_classic.model.ModelFileError
        Missing file, unknown name, or not a usable classical model file.
    fer_deep.DeepModelFileError
        A deep model file that is damaged or of another format version.
    fer_deep.DeepDependencyError
        A Keras model while Keras is not installed (``pip install 'fer-bench[deep]'``).
    """
    path = resolve_model(name_or_path)
    family = model_family(path)
    if family == "onnx":
        from fer_deep.onnx_model import OnnxModel

        return OnnxModel.load(path, threads=threads)
    if family == "ensemble":
        from .ensemble import EnsembleModel

        return EnsembleModel.load(path, load_member=lambda member: load_model(member, trust=trust, threads=threads),
                                  shipped_file=shipped_file)
    if family == "deep":
        from fer_deep.model import DeepModel

        return DeepModel.load(path)
    return ClassicModel.load(path, trust=trust)

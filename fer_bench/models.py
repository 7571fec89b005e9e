"""Load any saved fer-bench model, classical or deep, from its file alone.

A classical model is a skops file (:class:`fer_classic.model.ClassicModel`; a
joblib file of the first format loads only when trusted);
a deep model is a zip holding a Keras model and its metadata
(:class:`fer_deep.model.DeepModel`).  :func:`load_model` tells them apart by
their content, not their name, and imports the deep path only for a deep
file, so the classical path keeps working where Keras is not installed.
"""

from __future__ import annotations

from pathlib import Path

from fer_classic.model import ClassicModel, ModelFileError


def model_family(path) -> str:
    """``"deep"`` or ``"classic"``: which kind of fer-bench model file ``path`` is (by content).

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

    from .ensemble import is_ensemble_file

    if is_ensemble_file(path):
        return "ensemble"
    return "deep" if is_deep_model_file(path) else "classic"


def load_model(path, *, trust: bool = False):
    """Load a saved model of either family.

    Parameters
    ----------
    path : path
        A file written by ``ClassicModel.save``, ``DeepModel.save`` or ``EnsembleModel.save``.
    trust : bool
        Passed on to the loaders of classical models (and an ensemble's members).

    Returns
    -------
    ClassicModel, DeepModel or EnsembleModel
        All offer ``predict``, ``predict_proba``, ``classes_`` and ``metadata``;
        ``model.family`` is ``"classic"``, ``"deep"`` or ``"ensemble"``.

    Raises
    ------
    fer_classic.model.ModelFileError
        Missing file, or not a usable classical model file.
    fer_deep.DeepModelFileError
        A deep model file that is damaged or of another format version.
    fer_deep.DeepDependencyError
        A deep model while Keras is not installed (``pip install 'fer-bench[deep]'``).
    """
    family = model_family(path)
    if family == "ensemble":
        from .ensemble import EnsembleModel

        return EnsembleModel.load(path, load_member=lambda member: load_model(member, trust=trust))
    if family == "deep":
        from fer_deep.model import DeepModel

        return DeepModel.load(path)
    return ClassicModel.load(path, trust=trust)

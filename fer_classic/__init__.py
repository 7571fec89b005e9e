"""The classical path of fer-bench: hand-crafted features + scikit-learn classifiers; never imports Keras.

- :mod:`fer_classic.features`: LBP, HOG and dlib landmark transformers (scikit-learn ``TransformerMixin``);
- :mod:`fer_classic.estimators`: estimators of our own for fast CPU prediction (``FixedSizeLSSVM``, ``VectorizedSVC``);
- :mod:`fer_classic.classifiers`: the classifier registry (name -> pipeline and selection grid);
- :mod:`fer_classic.model`: :class:`ClassicModel`, features + classifier + labels + metadata in one saved file.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "ClassicModel": "fer_classic.model",
    "ModelFileError": "fer_classic.model",
    "prepare_for_deployment": "fer_classic.model",
    "HOGFeatures": "fer_classic.features",
    "LBPFeatures": "fer_classic.features",
    "LandmarkFeatures": "fer_classic.features",
    "make_features": "fer_classic.features",
    "FEATURES": "fer_classic.features",
    "CLASSIFIERS": "fer_classic.classifiers",
    "make_classifier": "fer_classic.classifiers",
    "FixedSizeLSSVM": "fer_classic.estimators",
    "VectorizedSVC": "fer_classic.estimators",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    # Lazy, so that `import fer_classic.features` alone does not load every submodule.
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fer_classic' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

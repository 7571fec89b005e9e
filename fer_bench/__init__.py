"""fer-bench: facial expression recognition, classical features and Keras CNNs side by side.

What a notebook needs, importable from here::

    from fer_bench import load_dataset, ClassicModel, classification_metrics

    data = load_dataset("../shared/data/fer2013")
    model = ClassicModel("hog", "svm").fit(data.train.X, data.train.y)
    classification_metrics(data.test.y, model.predict(data.test.X), data.classes)

The names load lazily: ``import fer_bench`` imports neither scikit-learn's
estimators nor Keras, and ``DeepModel`` imports Keras only when it is used.
The application lives in the submodules: :mod:`fer_bench.data`,
:mod:`fer_bench.faces`, :mod:`fer_bench.metrics`, :mod:`fer_bench.models`,
:mod:`fer_bench.predict`, :mod:`fer_bench.experiment`, :mod:`fer_bench.report`
and :mod:`fer_bench.cli`; :mod:`fer_bench._core` holds what every package
shares.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_dataset": "fer_bench.data",
    "Dataset": "fer_bench.data",
    "load_model": "fer_bench.models",
    "classification_metrics": "fer_bench.metrics",
    "evaluate_predictions": "fer_bench.metrics",
    "ClassicModel": "fer_classic.model",
    "DeepModel": "fer_deep.model",
    "HOGFeatures": "fer_classic.features",
    "LBPFeatures": "fer_classic.features",
    "LandmarkFeatures": "fer_classic.features",
    "make_features": "fer_classic.features",
    "FER2013_CLASSES": "fer_bench._core",
    "encode_labels": "fer_bench._core",
    "stratified_subset": "fer_bench._core",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # the next lookup skips this function
        return value
    raise AttributeError(f"module 'fer_bench' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

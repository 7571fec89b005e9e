"""The deep path of fer-bench: Keras CNNs with the same interface as the classical models.

Importing this package does not import Keras: the registry names, the error
types and :func:`require_keras` live here so the command line and the
application (fer_bench) can name architectures, show help and report a missing extra
without loading a deep-learning backend.  Keras is imported by the submodules
(:mod:`fer_deep.architectures`, :mod:`fer_deep.training`,
:mod:`fer_deep.explain`) and inside :class:`fer_deep.model.DeepModel`'s
methods, only when they are used.
"""

from __future__ import annotations

from fer_bench._core import FER2013_CLASSES  # the one shared module fer_deep imports

__all__ = ["ARCHITECTURE_ALIASES", "ARCHITECTURE_COSTS", "ARCHITECTURE_NAMES", "DEFAULT_EPOCHS", "DeepDependencyError",
           "DeepModel", "DeepModelFileError", "FER2013_CLASSES", "check_architecture_name", "require_keras"]

ARCHITECTURE_NAMES = {
    "tutorial": "classic tutorial CNN: 4 conv, dense 1024, dropout (about 63-66% on FER-2013)",
    "vgg": "VGG-style: 4 blocks of 3x3 conv + batch norm (64-512), dense 1024 x2 (Pramerdorfer & Kampel 2016 family)",
    "mobilenet_v2": "keras.applications.MobileNetV2 from scratch (or local weights) behind a 96x96 RGB stem",
    "vgg_cpu": "CPU-budget VGG: 40x40 centre crop, 4 blocks of 2 conv + batch norm (32-256), global average pooling",
    "resnet_cpu": "CPU-budget ResNet: 40x40 centre crop, basic residual blocks (32-256), global average pooling",
}
"""Architecture name -> one-line description; the keys equal :data:`fer_deep.architectures.ARCHITECTURES`'s."""

ARCHITECTURE_ALIASES = {"seed": "tutorial"}
"""Former architecture name -> registry name.  Saved models, checkpoints, records and run folders written
under a former name still name it; :func:`check_architecture_name` reads it as the registry name."""

# The tutorial net learns at a constant 1e-4 (see fer_deep.training.TRAINING_DEFAULTS), slowly, so it
# has the largest budget; early stopping on the validation split usually ends it first.
DEFAULT_EPOCHS = {"tutorial": 100, "vgg": 60, "mobilenet_v2": 40, "vgg_cpu": 30, "resnet_cpu": 30}
"""Maximum training epochs per architecture (early stopping on validation usually ends sooner)."""

ARCHITECTURE_COSTS = {
    "tutorial": (2_345_607, 77_326_464),
    "vgg": (10_472_519, 474_242_048),
    "mobilenet_v2": (2_266_951, 55_018_112),
    "vgg_cpu": (1_176_359, 81_563_392),
    "resnet_cpu": (1_221_319, 84_072_192),
}
"""Architecture -> (parameters, multiply-adds of one face's forward pass), built with default parameters for
48x48 faces and 7 classes (:func:`fer_deep.architectures.multiply_adds`); kept here so the registry can show
them without Keras, and checked against the built networks by the tests."""

DEEP_EXTRA_HINT = "pip install 'fer-bench[deep]'"


class DeepModelFileError(ValueError):
    """A deep model file could not be loaded; the message says why and what to do."""


class DeepDependencyError(ImportError):
    """Keras (the ``deep`` extra) is needed but not installed."""


def require_keras():
    """Import and return :mod:`keras`, or raise :class:`DeepDependencyError` naming the extra.

    Returns
    -------
    module
        The ``keras`` module.

    Raises
    ------
    DeepDependencyError
        If Keras (or its backend) cannot be imported.
    """
    try:
        import keras
    except ImportError as error:
        raise DeepDependencyError(
            f"the deep path needs Keras and a backend, which are not installed ({error}); {DEEP_EXTRA_HINT}"
        ) from None
    return keras


def check_architecture_name(name: str) -> str:
    """The registry name of architecture ``name`` (a former name, see :data:`ARCHITECTURE_ALIASES`, reads as
    the current one); raise ``ValueError`` listing the choices if it names none."""
    name = ARCHITECTURE_ALIASES.get(name, name)
    if name not in ARCHITECTURE_NAMES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURE_NAMES)}")
    return name


def __getattr__(name):
    # DeepModel is reachable as fer_deep.DeepModel without importing keras at
    # package import: fer_deep.model itself imports keras only inside methods.
    if name == "DeepModel":
        from .model import DeepModel

        return DeepModel
    raise AttributeError(f"module 'fer_deep' has no attribute {name!r}")

"""A CNN as an ONNX file, run by ONNX Runtime: the deep path on a machine without TensorFlow or Keras.

:func:`export_onnx` writes a fitted :class:`fer_deep.model.DeepModel` as one
ONNX file whose metadata holds what prediction needs (classes, test-time
augmentation, the crop margin) and the model's provenance.  :class:`OnnxModel`
loads such a file with ``onnxruntime`` alone and offers the interface every
fer-bench model shares (``predict``, ``predict_proba``, ``classes_``,
``save``/``load``, ``metadata``), with the same test-time augmentation as the
Keras model.  An ONNX file is a graph of operators and weights, not code, so
loading one runs nothing of the file's own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from fer_bench import _core

from . import DeepModelFileError
from .model import check_tta, crop_shifts

ONNX_FORMAT = "fer-bench-onnx-model"
ONNX_FORMAT_VERSION = 1
METADATA_KEY = "fer_bench"
ONNX_OPSET = 17
PREDICT_BATCH = 256


def export_onnx(model, path) -> Path:
    """Write a fitted DeepModel's network as an ONNX file (TensorFlow backend; needs ``tf2onnx``).

    The network is traced in inference mode (batch normalisation with its
    moving statistics, no dropout).  Standardisation layers become a constant
    scale and shift, which ONNX holds as weights rather than as extra inputs.

    Parameters
    ----------
    model : fer_deep.model.DeepModel
        A fitted model.
    path : path
        The ONNX file to write (atomically).

    Returns
    -------
    Path
    """
    import keras
    import onnx

    if keras.backend.backend() != "tensorflow":
        raise ValueError(f"ONNX export needs the TensorFlow backend of Keras, not {keras.backend.backend()}")
    import tensorflow as tf
    import tf2onnx

    model._check_fitted()
    network = _constant_standardisation(model.model_)
    spec = (tf.TensorSpec((None, *network.input_shape[1:]), tf.float32, name="face"),)

    @tf.function(input_signature=spec)
    def infer(face):
        return network(face, training=False)

    proto, _ = tf2onnx.convert.from_function(infer, input_signature=spec, opset=ONNX_OPSET)
    description = {
        "format": ONNX_FORMAT, "format_version": ONNX_FORMAT_VERSION, "family": "deep", "arch": model.arch,
        "classes": list(model.classes_), "tta": model.tta, "crop_margin": model.crop_margin(),
        "input_shape": list(model.input_shape_), "arch_params": model.arch_params,
        "best_epoch": getattr(model, "best_epoch_", None), "epochs_run": getattr(model, "epochs_run_", None),
        "metadata": model.metadata,
    }
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(description, default=_core.json_default)
    path = Path(path)
    with _core.replacing(path, suffix=".tmp") as tmp:
        onnx.save_model(proto, str(tmp))
    return path


def _constant_standardisation(network):
    """A copy of ``network`` whose Normalization layers are the equivalent Rescaling (scale, offset)."""
    import keras

    def clone(layer):
        if isinstance(layer, keras.layers.Normalization):
            mean = np.asarray(layer.mean, dtype=np.float64).reshape(-1)
            std = np.maximum(np.sqrt(np.asarray(layer.variance, dtype=np.float64).reshape(-1)),
                             keras.backend.epsilon())
            if mean.size != 1:
                raise ValueError(f"layer {layer.name}: per-channel standardisation is not supported by the export")
            return keras.layers.Rescaling(float(1 / std[0]), offset=float(-mean[0] / std[0]), name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(network, clone_function=clone)
    for source, target in zip(network.layers, copy.layers):
        if not isinstance(source, keras.layers.Normalization):
            target.set_weights(source.get_weights())
    return copy


def is_onnx_model_file(path) -> bool:
    """Whether ``path`` names an ONNX file (by its suffix; the content is checked on loading)."""
    return Path(path).suffix.lower() == ".onnx" and Path(path).is_file()


class OnnxModel:
    """A CNN exported by :func:`export_onnx`, run by ONNX Runtime.

    Parameters
    ----------
    path : path
        The ONNX file.
    threads : int or None
        Threads ONNX Runtime may use within an operator (``None``: its default, every core).
    """

    family = "deep"
    runtime = "onnxruntime"

    def __init__(self, path, *, threads: int | None = None):
        self.path = Path(path)
        self.threads = threads
        self._load()

    def _load(self):
        try:
            import onnxruntime
        except ImportError as error:
            raise DeepModelFileError(f"{self.path}: running an ONNX model needs onnxruntime ({error}); "
                                     f"pip install onnxruntime") from None
        if not hasattr(self, "model_bytes_"):
            if not self.path.is_file():
                raise DeepModelFileError(f"{self.path}: no such model file")
            # The bytes stay with the model: it saves and pickles without its file (an ensemble's members are
            # read from a temporary folder).
            self.model_bytes_ = self.path.read_bytes()
        options = onnxruntime.SessionOptions()
        if self.threads is not None:
            options.intra_op_num_threads = int(self.threads)
            options.inter_op_num_threads = 1
        try:
            self.session_ = onnxruntime.InferenceSession(self.model_bytes_, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types on damaged or foreign files
            raise DeepModelFileError(f"{self.path}: not a readable ONNX model ({type(error).__name__})") from None
        props = self.session_.get_modelmeta().custom_metadata_map
        try:
            info = json.loads(props[METADATA_KEY])
        except (KeyError, ValueError):
            raise DeepModelFileError(f"{self.path}: an ONNX model, but not one exported by fer-bench "
                                     f"(`fer-bench export MODEL --format onnx`)") from None
        if info.get("format") != ONNX_FORMAT or info.get("format_version") != ONNX_FORMAT_VERSION:
            raise DeepModelFileError(f"{self.path}: fer-bench ONNX format {info.get('format_version')}, this "
                                     f"fer-bench reads version {ONNX_FORMAT_VERSION}")
        self.info_ = info
        self.arch = info["arch"]
        self.classes_ = tuple(info["classes"])
        self.tta = check_tta(info["tta"])
        self.crop_margin_ = int(info.get("crop_margin") or 0)
        self.input_shape_ = tuple(info.get("input_shape") or (48, 48, 1))
        self.metadata = dict(info.get("metadata") or {})
        self.input_name_ = self.session_.get_inputs()[0].name

    @classmethod
    def load(cls, path, *, threads: int | None = None) -> "OnnxModel":
        """Load an ONNX file written by :func:`export_onnx`."""
        return cls(path, threads=threads)

    def _forward(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)[..., None]
        out = np.empty((len(X), len(self.classes_)), dtype=np.float64)
        for start in range(0, len(X), PREDICT_BATCH):
            batch = X[start:start + PREDICT_BATCH]
            out[start:start + len(batch)] = self.session_.run(None, {self.input_name_: batch})[0]
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, k)``, averaged over the test-time views as the Keras model does."""
        X = np.asarray(X)
        if X.ndim == 4 and X.shape[-1] == 1:
            X = X[..., 0]
        if X.ndim != 3 or X.shape[1:] != tuple(self.input_shape_[:2]):
            raise ValueError(f"faces must be a stack shaped (n, {self.input_shape_[0]}, {self.input_shape_[1]}), "
                             f"got {X.shape}")
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        if not self.tta:
            return self._forward(X)
        views = [X, X[:, :, ::-1]]
        if self.tta == "ten_crop":
            views = [mirrored for shifted in crop_shifts(X, self.crop_margin_) for mirrored in
                     (shifted, shifted[:, :, ::-1])]
        return sum(self._forward(view) for view in views) / len(views)

    def predict(self, X) -> np.ndarray:
        """Label names of faces ``X`` (the most probable class)."""
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]

    def save(self, path) -> Path:
        """Write the ONNX file to ``path`` (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with _core.replacing(path, suffix=".tmp") as tmp:
            Path(tmp).write_bytes(self.model_bytes_)
        return path

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("session_", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    def __repr__(self) -> str:
        return f"OnnxModel({os.fspath(self.path)!r}, arch={self.arch!r}, tta={self.tta!r})"

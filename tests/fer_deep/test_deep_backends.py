"""The deep path under the other Keras backends (JAX, PyTorch), where those are installed.

Each backend runs in a fresh process (Keras picks its backend once, at
import) with TensorFlow hidden, as on a machine without it: a tiny training
interrupted after epoch 1 and resumed, a save/load round trip and the
hand-checked Grad-CAM.  Skipped where the backend is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from deep_testing import REPO

CHECK = r"""
import json, sys, tempfile
class NoTensorFlow:  # hide TensorFlow without leaving a key in sys.modules
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, NoTensorFlow())
sys.path.append("tests")
import numpy as np
import keras
from conftest import synthetic_faces
from fer_deep.model import DeepModel
from fer_deep.explain import grad_cam

class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt

X, y = synthetic_faces(28, seed=1)
X_val, y_val = synthetic_faces(14, seed=2)
folder = tempfile.mkdtemp()
settings = dict(epochs=2, batch_size=14, verbose=0)
try:
    DeepModel("tutorial", **settings).fit(X, y, validation=(X_val, y_val), checkpoint_dir=folder,
                                          callbacks=[Interrupt()])
except KeyboardInterrupt:
    pass
model = DeepModel("tutorial", **settings).fit(X, y, validation=(X_val, y_val), checkpoint_dir=folder, resume=True)
path = model.save(folder + "/model.zip")
same = bool(np.array_equal(DeepModel.load(path).predict_proba(X_val), model.predict_proba(X_val)))

inputs = keras.Input((48, 48, 1))
conv = keras.layers.Conv2D(1, 1, use_bias=False, activation="relu")
dense = keras.layers.Dense(2, activation="softmax")
net = keras.Model(inputs, dense(keras.layers.GlobalAveragePooling2D()(conv(inputs))))
conv.set_weights([np.ones((1, 1, 1, 1), "float32")])
dense.set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
face = np.zeros((48, 48), np.uint8)
face[10:20, 5:30] = 200
print(json.dumps({"backend": keras.backend.backend(), "resumed_from": model.resumed_from_,
                  "epochs": len(model.history_["loss"]), "same": same,
                  "grad_cam": bool(np.allclose(grad_cam(net, face, 0), face / 200.0, atol=1e-5)),
                  "tensorflow": "tensorflow" in sys.modules}))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_training_resume_save_and_grad_cam_under_backend(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"backend": backend, "resumed_from": 1, "epochs": 2, "same": True, "grad_cam": True,
                      "tensorflow": False}

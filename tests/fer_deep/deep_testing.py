"""Helpers shared by the deep-path tests: one tiny trained model per test process.

Training even a tiny CNN costs seconds, so the model is trained once (cached
here, not in a fixture, so every test module shares it) and saved to a
temporary folder removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from conftest import CLASSES, synthetic_faces

REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=None)
def tiny_model_file() -> Path:
    """Path of a ``tutorial`` DeepModel trained for 1 epoch on 28 synthetic faces (validated on 14), labels as names."""
    from fer_deep.model import DeepModel

    folder = Path(tempfile.mkdtemp(prefix="fer-deep-test-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    X, y = synthetic_faces(28, seed=1)
    X_val, y_val = synthetic_faces(14, seed=2)
    model = DeepModel("tutorial", epochs=1, batch_size=14, verbose=0, metadata={"note": "tiny test model"})
    names = np.asarray(CLASSES)[y]  # label names, as a user would pass them
    model.fit(X, names, validation=(X_val, np.asarray(CLASSES)[y_val]))
    return model.save(folder / "tiny.zip")


def run_python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python process at the repository root (quiet TensorFlow)."""
    import os

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)

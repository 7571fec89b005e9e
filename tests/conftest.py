"""Shared fixtures: synthetic faces and datasets written to tmp_path, and the real FER-2013 when present."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
SHARED_FER = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013"
REPO = Path(__file__).resolve().parents[1]


def fer2013_path() -> Path | None:
    """FER-2013 from $FER_BENCH_DATA or ../shared/data/fer2013, if it is there."""
    for candidate in (os.environ.get("FER_BENCH_DATA"), SHARED_FER):
        if candidate and (Path(candidate) / "train").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def fer2013_dir():
    path = fer2013_path()
    if path is None:
        pytest.skip("FER-2013 not found (../shared/data/fer2013 or FER_BENCH_DATA)")
    return path


@pytest.fixture(scope="session")
def fer2013(fer2013_dir, tmp_path_factory):
    from fer_bench.data import load_dataset

    cache = os.environ.get("FER_BENCH_CACHE") or tmp_path_factory.mktemp("fer-cache")
    return load_dataset(fer2013_dir, cache_dir=cache)


def synthetic_faces(n: int, seed: int = 0, n_classes: int = 7):
    """Faces whose class is visible: a bright bar at a class-specific row, plus noise."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    X = rng.integers(0, 60, size=(n, 48, 48)).astype(np.uint8)
    for i, label in enumerate(y):
        row = 4 + 6 * label
        X[i, row : row + 4, 6:42] = 220
    return X, y.astype(np.int64)


def write_kaggle_layout(root: Path, per_class: int = 3, prefixes=True, seed: int = 0) -> Path:
    """A tiny FER-2013 in the Kaggle folder layout; returns root."""
    import cv2

    rng = np.random.default_rng(seed)
    counter = 0
    for subset, usages in (("train", ("Training",)), ("test", ("PublicTest", "PrivateTest"))):
        for label, name in enumerate(CLASSES):
            folder = root / subset / name
            folder.mkdir(parents=True, exist_ok=True)
            for usage in usages:
                for _ in range(per_class):
                    counter += 1
                    face = rng.integers(0, 60, size=(48, 48)).astype(np.uint8)
                    row = 4 + 6 * label
                    face[row : row + 4, 6:42] = 220  # the class is visible to the features
                    face[0, 0] = label * 30  # and readable by the tests
                    stem = f"{usage}_{counter:08d}" if prefixes else f"img_{counter:08d}"
                    cv2.imwrite(str(folder / f"{stem}.png"), face)  # lossless, so arrays compare exactly
    return root


@pytest.fixture
def kaggle_dir(tmp_path):
    return write_kaggle_layout(tmp_path / "fer2013")


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie counts as dead; reads /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_until_dead(pids, seconds: float = 20) -> list:
    """Waits up to ``seconds`` for the processes to end; the ones still running."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [pid for pid in pids if alive(pid)]


def kill_survivors(pids) -> None:
    """SIGKILL those of ``pids`` still running, so a failed test leaves no orphans."""
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def script_command(tmp_path, source: str, *, per_class: int = 1):
    """A small Kaggle-layout dataset, an empty run folder and the command running script ``source`` on them.

    The script gets the run folder, the dataset and a cache folder as its arguments.
    """
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=per_class)
    out = tmp_path / "run"
    out.mkdir()
    script = tmp_path / "script.py"
    script.write_text(source)
    return out, [sys.executable, str(script), str(out), str(data), str(tmp_path / "cache")]


def _default_interrupt():
    """In the started process: SIGINT back to its default, so that Python turns it into KeyboardInterrupt.

    A shell starts a background job (``pytest &``) with SIGINT ignored, its
    children inherit that, and Python keeps an ignored SIGINT ignored: the
    tests that interrupt a run would wait for it in vain.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait(command, ready, what: str, *, env=None, timeout: float = 60):
    """Start ``command`` (this checkout first on its path); return the process once ``ready()`` holds.

    Fails, killing the process, if it exits or ``timeout`` seconds pass first.
    """
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=_default_interrupt)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, what
            time.sleep(0.05)
    except BaseException:
        process.kill()
        raise
    return process

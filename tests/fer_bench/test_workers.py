"""Long in-process calls that Ctrl-C and SIGTERM still reach (fer_bench.workers.call_interruptibly)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import script_command, start_and_wait
from fer_bench.workers import call_interruptibly


class Stopped(Exception):
    pass


def test_passes_on_the_value_and_the_exception():
    assert call_interruptibly(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        call_interruptibly(divmod, 1, 0)


def test_a_signal_reaches_the_caller_while_the_call_runs():
    release, finished = threading.Event(), []

    def work():
        release.wait(60)
        finished.append(True)

    def stop(signal_number, frame):
        raise Stopped

    previous = signal.signal(signal.SIGUSR1, stop)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        with pytest.raises(Stopped):
            call_interruptibly(work)
        assert finished == []  # the caller was stopped while the work still ran
    finally:
        timer.cancel()
        release.set()
        signal.signal(signal.SIGUSR1, previous)


LONG_FIT_SCRIPT = """
import sys
from pathlib import Path
import numpy as np
from sklearn.svm import SVC
from fer_classic.model import ClassicModel
from fer_bench.cli import cli

out = Path(sys.argv[1])

def fit(self, X, y, **kwargs):
    (out / "fitting").write_text("")
    rng = np.random.default_rng(0)
    # Random labels keep nearly every point a support vector: one libsvm call of many minutes.
    SVC(C=100.0).fit(rng.normal(size=(40000, 50)), rng.integers(0, 7, 40000))
    return self

ClassicModel.fit = fit
cli(["run", "--features", "lbp", "--classifier", "svm", "--no-select", "--data", sys.argv[2], "--out", str(out),
     "--cache-dir", sys.argv[3], "--no-report"], prog_name="fer-bench")
"""


@pytest.mark.skipif(sys.platform.startswith("win"), reason="SIGTERM")
def test_sigterm_stops_a_run_inside_a_long_svm_fit(tmp_path):
    out, command = script_command(tmp_path, LONG_FIT_SCRIPT, per_class=2)
    process = start_and_wait(command, (out / "fitting").exists, "the fit never started", timeout=120)
    try:
        time.sleep(1.0)  # inside libsvm
        process.send_signal(signal.SIGTERM)
        try:
            _, stderr = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail("SIGTERM went unanswered while the SVM fitted")
        assert process.returncode == 143, stderr
        assert "interrupted; finished cells are saved" in stderr and "Traceback" not in stderr
        assert not list(out.glob("records/*.json")) and not list(out.glob("models/*"))
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

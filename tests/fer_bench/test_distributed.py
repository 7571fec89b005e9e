"""Sweeps on a Dask cluster: the same run folder as a local run, a killed worker, an interrupted client, --scatter,
the workers' data check, and no Dask import without --dask.

The clusters are LocalClusters of two worker processes with one thread each, and the grids tiny (a few
hundred faces at most), so every test runs in seconds on a shared 2-core machine.  Fake cell runners are
sent to the workers by value (cloudpickle), as a task carries the runner the sweep planned with.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from distributed import Client, LocalCluster

from fer_bench.data import Dataset, Split
from fer_bench.experiment import distributed as fer_dask
from fer_bench.experiment import sweep
from fer_bench.experiment.harness import cell_id, load_predictions, save_predictions

from conftest import (CLASSES, REPO, kill_survivors, script_command, start_and_wait, synthetic_faces,
                      wait_until_dead, write_kaggle_layout)

GRID = {"features": ["lbp", "hog"], "classifiers": ["knn", "dt"]}


@pytest.fixture(scope="module")
def by_value():
    """Functions of this module travel to the workers by value (their processes cannot import it)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def client(by_value):
    """Two worker processes, one thread each."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as dask_client:
        yield dask_client


def synthetic_dataset(n_train=70, n_val=35, n_test=35) -> Dataset:
    X, y = synthetic_faces(n_train + n_val + n_test, seed=3)
    cut = np.cumsum([n_train, n_val])
    return Dataset("synthetic", "memory", CLASSES, Split("Training", X[: cut[0]], y[: cut[0]]),
                   Split("PublicTest", X[cut[0]:cut[1]], y[cut[0]:cut[1]]),
                   Split("PrivateTest", X[cut[1]:], y[cut[1]:]), "synthetic, fixed", "synthetic-3")


def fake_classic(marks, dataset, features, classifier, out_dir, **settings):
    """A classical cell runner for the workers: notes each attempt in ``marks``, fails for ``dt``, writes
    predictions into the cell's folder and returns a finished record pointing at them."""
    name = cell_id(features, classifier)
    marks.mkdir(exist_ok=True)
    (marks / f"{name}.{os.getpid()}.{time.time_ns()}").write_text(str(os.getpid()))
    if classifier == "dt":
        raise ValueError(f"boom in {name}")
    y = dataset.test.y
    path = save_predictions(Path(out_dir) / "predictions" / f"{name}.npz", y, y, np.eye(7)[y], dataset.classes)
    return {"cell": name, "family": "classic", "status": "ok", "error": None, "accuracy": 1.0, "f1_macro": 1.0,
            "split": {"test": dataset.test.name}, "predictions_path": str(path), "wall_seconds": 0.0,
            "n_test": len(y), "dataset_key": dataset.content_key}


def fake_deep(dataset, arch, out_dir, **settings):
    """A CNN runner for the workers: a checkpoint that counts the runs it has seen, a model file, a record."""
    name = f"cnn-{arch}"
    checkpoint = Path(out_dir) / "checkpoints" / name / "state.json"
    runs = json.loads(checkpoint.read_text())["runs"] + 1 if checkpoint.is_file() else 1
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(json.dumps({"runs": runs}))
    model = Path(out_dir) / "models" / f"{name}.zip"
    model.parent.mkdir(parents=True, exist_ok=True)
    model.write_bytes(b"weights")
    return {"cell": name, "family": "deep", "status": "ok", "error": None, "accuracy": 0.5, "f1_macro": 0.5,
            "runs": runs, "model_path": str(model), "epochs": settings["epochs"], "seed": settings["seed"],
            "split": {"test": dataset.test.name}}


def files_of(folder: Path) -> list:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_parse_dask_option_and_scaling_model():
    assert fer_dask.parse_dask_option("local") == ("local", None)
    assert fer_dask.parse_dask_option("local:3") == ("local", 3)
    assert fer_dask.parse_dask_option("tcp://10.0.0.5:8786") == ("address", "tcp://10.0.0.5:8786")
    for bad in ("local:0", "local:x", " "):
        with pytest.raises(fer_dask.DaskSetupError, match="--dask"):
            fer_dask.parse_dask_option(bad)
    # cells shared out over the workers, but never less than the longest cell
    assert fer_dask.scaled_seconds([10, 10, 10, 10], 2) == 20
    assert fer_dask.scaled_seconds([100, 10, 10], 4) == 100
    assert fer_dask.scaled_seconds([], 4) == 0


def test_dask_grid_gives_the_local_run_folder_and_resumes_either_way(tmp_path, client):
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=10)  # 210 faces: 70 for each split
    settings = dict(data_path=data, cache_dir=tmp_path / "cache", select=True, log=lambda _: None, **GRID)
    local = sweep.run_sweep(out_dir=tmp_path / "local", **settings)
    lines = []
    on_dask = fer_dask.DaskExecutor(client)
    remote = sweep.run_sweep(out_dir=tmp_path / "dask", execute=on_dask, **{**settings, "log": lines.append})

    assert [r["cell"] for r in remote] == [r["cell"] for r in local] == \
        ["lbp__knn", "lbp__dt", "hog__knn", "hog__dt"]
    assert files_of(tmp_path / "dask") == files_of(tmp_path / "local")
    for mine, theirs in zip(local, remote):
        assert theirs["status"] == mine["status"] == "ok"
        assert theirs["accuracy"] == mine["accuracy"]
        assert theirs["classifier_params"] == mine["classifier_params"]  # the same candidate chosen
        assert [s["validation_accuracy"] for s in theirs["selection"]] == \
            [s["validation_accuracy"] for s in mine["selection"]]
        assert theirs["config"] == mine["config"] and theirs["model_path"] == mine["model_path"]
        ours, dasks = (load_predictions(folder / r["predictions_path"])
                       for folder, r in ((tmp_path / "local", mine), (tmp_path / "dask", theirs)))
        assert all(np.array_equal(ours[key], dasks[key]) for key in ours)
        on_disk = json.loads((tmp_path / "dask" / "records" / f"{theirs['cell']}.json").read_text())
        assert on_disk["predictions_path"] == f"predictions/{theirs['cell']}.npz"  # relative, as locally
    assert sum("started on tcp://" in line for line in lines) == 4  # the workers' progress reached the client
    assert sum("(sweep " in line for line in lines) == 4

    # A Dask run folder resumes locally, and a local one on Dask: nothing runs again.
    lines.clear()
    again = sweep.run_sweep(out_dir=tmp_path / "dask", **{**settings, "log": lines.append})
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in local]
    assert sum("finished earlier, skipped" in line for line in lines) == 4
    lines.clear()
    sweep.run_sweep(out_dir=tmp_path / "local", execute=on_dask, **{**settings, "log": lines.append})
    assert sum("finished earlier, skipped" in line for line in lines) == 4


def test_scattered_data_failed_cell_and_cnn_files(tmp_path, client, monkeypatch):
    dataset = synthetic_dataset()
    monkeypatch.setattr(sweep, "run_classic_cell", functools.partial(fake_classic, tmp_path / "marks"))
    monkeypatch.setattr(sweep, "run_deep_cell", fake_deep)
    lines = []
    out = tmp_path / "run"
    on_dask = fer_dask.DaskExecutor(client)
    records = sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["knn", "dt"], cnns=["tutorial"],
                              out_dir=out, epochs=2, execute=on_dask, log=lines.append)
    # A dataset given in memory is scattered; a cell that raises on its worker is recorded, the others go on.
    assert any("decoded arrays are sent to every worker" in line for line in lines)
    assert [(r["cell"], r["status"]) for r in records] == [("lbp__knn", "ok"), ("lbp__dt", "error"),
                                                          ("cnn-tutorial", "ok")]
    failed = json.loads((out / "records" / "lbp__dt.json").read_text())
    assert failed["error"] == "ValueError: boom in lbp__dt" and failed["config"]["classifier"] == "dt"
    assert "fake_classic" in failed["traceback"]
    assert files_of(out) == ["checkpoints/cnn-tutorial/state.json", "models/cnn-tutorial.zip",
                             "predictions/lbp__knn.npz", "records/cnn-tutorial.json", "records/lbp__dt.json",
                             "records/lbp__knn.json"]
    assert records[2]["model_path"] == "models/cnn-tutorial.zip" and records[2]["runs"] == 1

    # The CNN's checkpoint goes back to the worker: a forced rerun resumes from it.
    again = sweep.run_sweep(dataset=dataset, cnns=["tutorial"], out_dir=out, epochs=2, execute=on_dask, force=True,
                            log=lines.append)
    assert again[0]["runs"] == 2
    assert json.loads((out / "checkpoints" / "cnn-tutorial" / "state.json").read_text()) == {"runs": 2}

    # train cnn --dask: one CNN as a task, its record written as the local command writes it.
    record = fer_dask.run_deep_cell_on_dask(client, dataset, "tutorial", tmp_path / "train", data_path=None,
                                            cache_dir=None, seed=4, log=lines.append, epochs=3, batch_size=8)
    assert record["epochs"] == 3 and record["seed"] == 4
    assert record["model_path"] == str(tmp_path / "train" / "models" / "cnn-tutorial.zip")
    assert json.loads((tmp_path / "train" / "records" / "cnn-tutorial.json").read_text()) == record
    assert (tmp_path / "train" / "models" / "cnn-tutorial.zip").read_bytes() == b"weights"


def test_a_worker_that_sees_other_data_fails_the_cell(tmp_path):
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=1)
    source = fer_dask.DataSource(str(data), None, 0, None, "the-clients-key", {})
    with pytest.raises(fer_dask.WorkerDataError,
                       match=r"the dataset at .*fer2013 has content key \w+, the client's has the-clients-key; "
                             r"every worker must see the same files at that path, or run with --scatter"):
        fer_dask.worker_dataset(source)
    with pytest.raises(fer_dask.WorkerDataError, match=r"has scikit-learn \S+ \(client: 0\.0\); install the same"):
        fer_dask.check_versions({"scikit-learn": "0.0"})
    fer_dask.check_versions({"python": "2.7"})  # the Python patch level is not compared


def test_a_killed_worker_has_its_cell_rerun_and_every_cell_recorded_once(tmp_path, by_value, monkeypatch):
    marks = tmp_path / "marks"

    def kill_the_first_worker_to_run(victim):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            started = list(marks.glob(f"{victim}.*")) if marks.is_dir() else []
            pid = started[0].read_text() if started else ""
            if pid:
                time.sleep(2)  # inside the cell, and after the worker's earlier results reached the client
                os.kill(int(pid), signal.SIGKILL)
                return
            time.sleep(0.05)

    def slow_classic(dataset, features, classifier, out_dir, **settings):
        name = cell_id(features, classifier)
        if name == "hog__knn" and not list(marks.glob(f"{name}.*")):
            marks.mkdir(exist_ok=True)
            (marks / f"{name}.{os.getpid()}.first").write_text(str(os.getpid()))
            time.sleep(60)  # killed here
        return fake_classic(marks, dataset, features, classifier, out_dir, **settings)

    killer = threading.Thread(target=kill_the_first_worker_to_run, args=("hog__knn",), daemon=True)
    killer.start()
    monkeypatch.setattr(sweep, "run_classic_cell", slow_classic)
    lines = []
    records = sweep.run_sweep(dataset=synthetic_dataset(), features=["lbp", "hog"], classifiers=["knn", "svm"],
                              out_dir=tmp_path / "run", execute=fer_dask.DaskExecutor("local:2"), log=lines.append)
    killer.join(timeout=1)
    names = ["lbp__knn", "lbp__svm", "hog__knn", "hog__svm"]
    assert [(r["cell"], r["status"]) for r in records] == [(name, "ok") for name in names]
    assert files_of(tmp_path / "run" / "records") == sorted(f"{name}.json" for name in names)
    assert [sum(f"] {name}: " in line and "(sweep " in line for line in lines) for name in names] == [1, 1, 1, 1]
    attempts = {name: len(list(marks.glob(f"{name}.*"))) for name in names}
    assert attempts == {"lbp__knn": 1, "lbp__svm": 1, "hog__knn": 2, "hog__svm": 1}  # the killed one twice


INTERRUPT_SCRIPT = """
import os, sys, time
from pathlib import Path
import numpy as np
from fer_bench.experiment import sweep
from fer_bench.experiment.harness import cell_id, save_predictions
from fer_bench.cli import cli

out = Path(sys.argv[1])

def cell(dataset, features, classifier, out_dir, **settings):
    name = cell_id(features, classifier)
    with open(out / "calls.txt", "a") as stream:
        stream.write(name + "\\n")
    if classifier == "dt" and os.environ.get("HANG_IN_DT"):
        (out / "dt.pid").write_text(str(os.getpid()))
        time.sleep(300)  # the client is interrupted meanwhile
    y = dataset.test.y
    path = save_predictions(Path(out_dir) / "predictions" / f"{name}.npz", y, y, np.eye(7)[y], dataset.classes)
    return {"cell": name, "family": "classic", "status": "ok", "accuracy": 0.5, "f1_macro": 0.5,
            "split": {"test": "PrivateTest"}, "predictions_path": str(path)}

if __name__ == "__main__":  # the workers' processes start from this file too
    sweep.run_classic_cell = cell
    cli(["run", "--features", "lbp", "--classifier", "knn,dt,svm", "--data", sys.argv[2], "--out", str(out),
         "--cache-dir", sys.argv[3], "--no-report", "--dask", "local:2"], prog_name="fer-bench")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_interrupted_client_cancels_its_tasks_and_a_rerun_completes_only_the_missing_cells(tmp_path):
    out, command = script_command(tmp_path, INTERRUPT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HANG_IN_DT": "1"}
    finished = [out / "records" / "lbp__knn.json", out / "records" / "lbp__svm.json"]
    process = start_and_wait(command, lambda: (out / "dt.pid").exists() and all(path.exists() for path in finished),
                             "the cells never got going", env=env, timeout=180)
    try:
        time.sleep(0.1)  # the pid file written in full
        hanging = int((out / "dt.pid").read_text())
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    try:
        assert process.returncode == 130, stderr
        assert "interrupted; finished cells are saved" in stderr
        assert wait_until_dead([hanging], 30) == [], "the worker running the cancelled cell outlived the client"
    finally:
        kill_survivors([hanging])
    assert files_of(out / "records") == ["lbp__knn.json", "lbp__svm.json"]

    (out / "calls.txt").unlink()
    del env["HANG_IN_DT"]
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "calls.txt").read_text().split() == ["lbp__dt"]  # only the cell the interrupt cut short
    assert rerun.stderr.count("finished earlier, skipped") == 2
    assert files_of(out / "records") == ["lbp__dt.json", "lbp__knn.json", "lbp__svm.json"]


def test_without_dask_the_run_imports_no_dask(tmp_path):
    """Neither the command line nor a run without --dask imports Dask's scheduler and client (distributed).

    ``dask`` itself is left out of the run's check: when it is installed, skops' first save walks every
    scikit-learn module (``sklearn.utils.discovery.all_estimators``), and one of them,
    ``sklearn.externals.array_api_compat.dask.array``, imports ``dask.array``.
    """
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=1)
    code = (
        "import sys\n"
        "from fer_bench.cli import cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
        f"cli.main(['run', '--features', 'lbp', '--classifier', 'dt', '--data', {str(data)!r}, '--out', "
        f"{str(tmp_path / 'run')!r}, '--cache-dir', {str(tmp_path / 'cache')!r}, '--no-report'], "
        "standalone_mode=False)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'distributed'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "records" / "lbp__dt.json").is_file()
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "[]"  # importing the command line imports neither
    assert lines[-1] == "[]"  # and the run never starts or connects to a cluster

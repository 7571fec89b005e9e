"""The sweep: cells of both families, presets, resume, error records, kill-and-resume, peak memory, `run --all`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer_bench.experiment import sweep
from fer_bench.cli import cells_to_run, cli
from fer_bench.data import Dataset, Split
from fer_bench.experiment.harness import cell_id, save_predictions
from fer_classic.classifiers import CLASSIFIERS

from conftest import (CLASSES, REPO, alive, kill_survivors, script_command, start_and_wait, synthetic_faces,
                      wait_until_dead, write_kaggle_layout)


def synthetic_dataset(n_train=70, n_val=35, n_test=35) -> Dataset:
    X, y = synthetic_faces(n_train + n_val + n_test, seed=1)
    cut = np.cumsum([n_train, n_val])
    return Dataset("synthetic", "memory", CLASSES, Split("Training", X[: cut[0]], y[: cut[0]]),
                   Split("PublicTest", X[cut[0]:cut[1]], y[cut[0]:cut[1]]),
                   Split("PrivateTest", X[cut[1]:], y[cut[1]:]), "synthetic, fixed", "synthetic-1")


def fake_record(dataset, name, out_dir, family):
    """What a cell returns: a finished record whose predictions file lies under out_dir (absolute path)."""
    y = dataset.test.y
    path = save_predictions(Path(out_dir).resolve() / "predictions" / f"{name}.npz", y, y, np.eye(7)[y], CLASSES)
    return {"schema_version": 1, "cell": name, "family": family, "status": "ok", "error": None,
            "dataset": dataset.name, "dataset_key": dataset.content_key,
            "split": {"train": "Training", "validation": "PublicTest", "test": "PrivateTest"},
            "accuracy": 1.0, "f1_macro": 1.0, "validation_accuracy": 1.0, "n_test": len(y),
            "fit_seconds": 0.1, "predict_ms_per_face": 0.2, "predict_ms_single": 1.0, "model_bytes": 10,
            "predictions_path": str(path), "wall_seconds": 0.1}


@pytest.fixture
def calls(monkeypatch):
    """Replace both cell runners with fakes that log their calls and return finished records."""
    made = []

    def classic(dataset, features, classifier, out_dir, **settings):
        made.append(("classic", cell_id(features, classifier), settings))
        if classifier == "dt":
            raise ValueError("boom in dt")
        return fake_record(dataset, cell_id(features, classifier), out_dir, "classic")

    def deep(dataset, arch, out_dir, **settings):
        made.append(("deep", f"cnn-{arch}", settings))
        record = fake_record(dataset, f"cnn-{arch}", out_dir, "deep")
        record["history"] = {"loss": [1.0, 0.5], "val_loss": [1.1, 0.9], "accuracy": [0.5, 0.7],
                             "val_accuracy": [0.4, 0.6]}
        return record

    def ensemble(dataset, name, cells, out_dir, **settings):
        made.append(("ensemble", name, {"members": list(cells)}))
        record = fake_record(dataset, name, out_dir, "deep" if name == "ensemble-cnn" else "fusion")
        return {**record, "members": list(cells)}

    from fer_bench.experiment import ensemble_cell

    monkeypatch.setattr(sweep, "run_classic_cell", classic)
    monkeypatch.setattr(sweep, "run_deep_cell", deep)
    monkeypatch.setattr(ensemble_cell, "run_ensemble_cell", ensemble)
    return made


def test_real_classic_cells_then_resume_skips_them(tmp_path, monkeypatch):
    dataset = synthetic_dataset()
    lines = []
    records = sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["dt", "knn"], out_dir=tmp_path,
                              select=False, log=lines.append)
    assert [(r["cell"], r["status"]) for r in records] == [("lbp__dt", "ok"), ("lbp__knn", "ok")]
    record = json.loads((tmp_path / "records" / "lbp__knn.json").read_text())
    assert record["predictions_path"] == "predictions/lbp__knn.npz"  # relative to the run folder
    assert record["model_path"] == "models/lbp__knn.skops"
    assert record["config"]["classifier"] == "knn" and record["preset"] == "full"
    assert record["peak_rss_bytes"] >= record["start_rss_bytes"] > 0
    assert any(line.startswith("[1/2 ") and "lbp__dt" in line for line in lines)
    assert any(line.startswith("[2/2 ####################] lbp__knn: PrivateTest accuracy") for line in lines)

    ran = []
    monkeypatch.setattr(sweep, "run_classic_cell", lambda *args, **kwargs: ran.append(args) or {})
    lines.clear()
    again = sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["dt", "knn"], out_dir=tmp_path,
                            select=False, log=lines.append)
    assert ran == []
    assert [r["accuracy"] for r in again] == [r["accuracy"] for r in records]
    assert sum("finished earlier, skipped" in line for line in lines) == 2

    # a default changed in the code since the record was written is a different setting: that cell reruns
    import fer_classic.classifiers

    knn = fer_classic.classifiers.CLASSIFIERS["knn"]
    monkeypatch.setitem(fer_classic.classifiers.CLASSIFIERS, "knn", replace(knn, grid={"n_neighbors": [7]}))
    sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["dt", "knn"], out_dir=tmp_path, select=False,
                    log=lines.append)
    assert [args[2] for args in ran] == ["knn"]
    # and so is a parameter given this time
    sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["dt"], out_dir=tmp_path, select=False,
                    classifier_params={"max_depth": 3}, log=lines.append)
    assert [args[2] for args in ran] == ["knn", "dt"]


def test_cli_run_with_flip_tta_makes_cells_of_their_own_beside_the_plain_ones(tmp_path):
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=3)
    out = tmp_path / "run"
    args = ["run", "--features", "hog", "--classifier", "knn", "--no-select", "--data", str(data), "--out", str(out),
            "--cache-dir", str(tmp_path / "cache")]
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 0, plain.output
    augmented = CliRunner().invoke(cli, args + ["--tta", "flip"])
    assert augmented.exit_code == 0, augmented.output
    assert "finished earlier" not in augmented.stderr
    record = json.loads((out / "records" / "hog__knn__tta_flip.json").read_text())
    assert record["tta"] == "flip" and record["config"]["tta"] == "flip"
    assert "tta" not in json.loads((out / "records" / "hog__knn.json").read_text())["config"]
    assert (out / "models" / "hog__knn__tta_flip.skops").is_file() and (out / "models" / "hog__knn.skops").is_file()
    # Each is reused on a rerun with its own setting.
    for extra in ([], ["--tta", "flip"]):
        again = CliRunner().invoke(cli, args + extra)
        assert again.exit_code == 0 and again.stderr.count("finished earlier, skipped") == 1
    bad = CliRunner().invoke(cli, args + ["--tta", "ten_crop"])
    assert bad.exit_code == 1 and "Invalid value for '--tta': 'ten_crop' is not one of 'none', 'flip'" in bad.output


def test_failed_cell_becomes_error_record_and_is_retried(tmp_path, calls):
    dataset = synthetic_dataset()
    records = sweep.run_sweep(dataset=dataset, features=["hog"], classifiers=["dt", "knn"], out_dir=tmp_path,
                              log=lambda _: None)
    assert [r["status"] for r in records] == ["error", "ok"]  # the sweep went on after the failure
    error = json.loads((tmp_path / "records" / "hog__dt.json").read_text())
    assert error["error"] == "ValueError: boom in dt"
    assert error["family"] == "classic" and error["classifier"] == "dt" and "config" in error
    calls.clear()
    sweep.run_sweep(dataset=dataset, features=["hog"], classifiers=["dt", "knn"], out_dir=tmp_path,
                    log=lambda _: None)
    assert [name for _, name, _ in calls] == ["hog__dt"]  # only the failed one reruns


def test_deep_cells_get_the_preset_settings(tmp_path, calls):
    dataset = synthetic_dataset(n_train=140)
    quick = sweep.Preset("quick", "test", train_size=70, validation_size=14, select=False, cnn_epochs=2,
                         batch_size=16)
    records = sweep.run_sweep(dataset=dataset, features=["lbp"], classifiers=["knn"], cnns=["tutorial", "vgg"],
                              out_dir=tmp_path, preset=quick, log=lambda _: None)
    assert [r["cell"] for r in records] == ["lbp__knn", "cnn-tutorial", "cnn-vgg"]
    family, name, settings = calls[1]
    assert (family, name) == ("deep", "cnn-tutorial")
    assert {k: settings[k] for k in ("epochs", "batch_size", "seed", "resume", "train_subset")} == {
        "epochs": 2, "batch_size": 16, "seed": 0, "resume": True, "train_subset": None}
    assert calls[0][2]["select"] is False  # the preset's choice
    record = json.loads((tmp_path / "records" / "cnn-vgg.json").read_text())
    assert record["config"] == {"dataset_key": record["dataset_key"], "arch": "vgg", "epochs": 2,
                                "batch_size": 16, "seed": 0, "train_params": {}}
    assert record["predictions_path"] == "predictions/cnn-vgg.npz"
    assert record["preset"] == "quick"
    # every cell saw the same subsample: 70 of 140 training faces, 14 of 35 validation faces
    assert record["dataset_key"] != dataset.content_key
    assert "Training 70, PublicTest 14, PrivateTest 35" in record["dataset_notes"][0]


def test_a_run_folder_keeps_the_tutorial_nets_former_cell_name(tmp_path, calls):
    dataset = synthetic_dataset(n_train=140)
    quick = sweep.Preset("quick", "test", train_size=70, validation_size=14, select=False, cnn_epochs=2,
                         batch_size=16)
    fresh = sweep.run_sweep(dataset=dataset, cnns=["seed"], out_dir=tmp_path / "fresh", preset=quick,
                            log=lambda _: None)
    assert [r["cell"] for r in fresh] == ["cnn-tutorial"] and fresh[0]["config"]["arch"] == "tutorial"
    # A folder written before the rename holds the cell as cnn-seed, with arch "seed" in its settings.
    old = tmp_path / "old"
    (old / "records").mkdir(parents=True)
    record = {**fresh[0], "cell": "cnn-seed", "config": {**fresh[0]["config"], "arch": "seed"}}
    (old / "records" / "cnn-seed.json").write_text(json.dumps(record))
    calls.clear()
    lines = []
    again = sweep.run_sweep(dataset=dataset, cnns=["tutorial"], out_dir=old, preset=quick, log=lines.append)
    assert calls == [] and [r["cell"] for r in again] == ["cnn-seed"]
    assert any("cnn-seed: finished earlier, skipped" in line for line in lines)
    assert sorted(path.name for path in (old / "records").iterdir()) == ["cnn-seed.json"]
    # An interrupted one (checkpoints only) resumes under its name too.
    (tmp_path / "interrupted" / "checkpoints" / "cnn-seed").mkdir(parents=True)
    sweep.run_sweep(dataset=dataset, cnns=["tutorial"], out_dir=tmp_path / "interrupted", preset=quick,
                    log=lambda _: None)
    assert [name for _, name, _ in calls] == ["cnn-seed"]


def test_full_preset_epochs_per_architecture():
    import fer_deep

    full = sweep.PRESETS["full"]
    assert sweep.cnn_epochs("tutorial", full) == sweep.cnn_epochs("seed", full) == fer_deep.DEFAULT_EPOCHS["tutorial"]
    assert set(fer_deep.DEFAULT_EPOCHS) == set(fer_deep.ARCHITECTURE_NAMES)  # every CNN has its budget
    assert sweep.cnn_epochs("tutorial", full, override=3) == 3
    assert sweep.cnn_epochs("tutorial", sweep.PRESETS["quick"]) == 1


def test_stratified_subset_keeps_class_shares():
    y = np.repeat(np.arange(4), [400, 300, 200, 100])
    index = sweep.stratified_subset(y, 100, seed=0)
    assert np.bincount(y[index]).tolist() == [40, 30, 20, 10]
    assert np.array_equal(index, sweep.stratified_subset(y, 100, seed=0))
    assert not np.array_equal(index, sweep.stratified_subset(y, 100, seed=1))
    assert len(sweep.stratified_subset(y, None, seed=0)) == 1000
    with pytest.raises(ValueError, match="a subset needs at least one face"):
        sweep.stratified_subset(y, 0, seed=0)


def test_subsample_dataset_leaves_full_preset_alone():
    dataset = synthetic_dataset()
    assert sweep.subsample_dataset(dataset, sweep.PRESETS["full"]) is dataset
    small = sweep.subsample_dataset(dataset, sweep.Preset("p", "", train_size=35))
    assert len(small.train) == 35 and small.test is dataset.test and small.content_key != dataset.content_key


def test_relative_paths(tmp_path):
    record = {"predictions_path": str(tmp_path / "predictions" / "a.npz"), "model_path": "/elsewhere/m.joblib",
              "curves_png": str(tmp_path / "plots" / "c.png"), "accuracy": 0.5, "cell": "a"}
    sweep.relative_paths(record, tmp_path)
    assert record == {"predictions_path": "predictions/a.npz", "model_path": "/elsewhere/m.joblib",
                      "curves_png": "plots/c.png", "accuracy": 0.5, "cell": "a"}


def test_peak_memory_sees_a_large_allocation():
    import mmap

    with sweep.PeakMemory(interval=0.01) as memory:
        # 100 MB of fresh anonymous pages, every one touched.  A mapping of its own
        # rather than an array: malloc may hand an array pages this long-lived test
        # process already holds from earlier tests, which would raise nothing.
        block = mmap.mmap(-1, 100_000_000)
        np.frombuffer(block, dtype=np.uint8)[::4096] = 1
        block.close()
    result = memory.result
    assert result["peak_rss_bytes"] - result["start_rss_bytes"] >= 90_000_000
    # The method is the one this machine allows: the kernel's mark where it can be reset.
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        expected = "VmHWM"
    except OSError:
        expected = "ru_maxrss"
    assert result["peak_memory_method"].split()[0] == expected


def test_peak_memory_of_the_tree_counts_child_processes():
    import subprocess
    import sys

    child = "import time, numpy as np; block = np.ones(150_000_000 // 8); time.sleep(1.5)"
    with sweep.PeakMemory(interval=0.05) as memory:
        subprocess.run([sys.executable, "-c", child], check=True)
    result = memory.result
    # The child's 150 MB are in the sampled tree total and not in this process's own peak.
    assert result["peak_tree_rss_bytes"] - result["start_rss_bytes"] >= 120_000_000
    assert result["peak_rss_bytes"] - result["start_rss_bytes"] < 60_000_000


def test_progress_lines():
    lines = []
    progress = sweep.Progress(4, lines.append, width=8)
    progress.cell_log(1, "hog__svm")("fitting")
    progress.finish(1, "hog__svm", "done")
    assert lines[0].startswith("[1/4 ........] hog__svm +0:00:00: fitting")
    assert lines[1].startswith("[1/4 ##......] hog__svm: done (sweep 1/4 done, 0:00:")


def test_cells_to_run():
    assert cells_to_run(False, None, None, None) == (["hog"], ["svm"], [])
    assert cells_to_run(False, "lbp", "knn,DT", None) == (["lbp"], ["knn", "dt"], [])
    assert cells_to_run(False, None, None, "tutorial") == ([], [], ["tutorial"])
    features, classifiers, cnns = cells_to_run(True, None, None, None)
    assert features == list(sweep.FEATURE_SETS) == ["lbp", "hog", "landmarks", "hog+lbp+landmarks"]
    # local_mkl and global_mkl need sift_words, which --all leaves out
    every = [name for name in CLASSIFIERS if name not in ("local_mkl", "global_mkl")]
    assert classifiers == every and cnns == sweep.preset_networks("full") and cnns
    assert "vgg" not in cnns and "vgg" in cells_to_run(True, None, None, None, "accelerator")[2]
    assert cells_to_run(True, "hog", None, "tutorial") == (["hog"], every, ["tutorial"])
    assert cells_to_run(True, "sift_words+hog", "local_mkl", None)[1] == ["local_mkl"]


def test_cli_run_all_both_families_writes_report(tmp_path, calls):
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=2)
    out = tmp_path / "run"
    args = ["run", "--all", "--features", "hog", "--classifier", "knn,svm", "--preset", "quick", "--data", str(data),
            "--out", str(out), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    cnn_cells = [f"cnn-{a}" for a in sweep.preset_networks("quick")]
    expected = ["hog__knn", "hog__svm"] + cnn_cells + ["ensemble-cnn", "fusion"]
    assert [name for _, name, _ in calls] == expected
    # The fusion takes the best classical cell by validation accuracy and every CNN.
    assert calls[-1][2]["members"][1:] == cnn_cells and calls[-2][2]["members"] == cnn_cells
    assert all(name in result.stdout for name in expected)
    page = (out / "report.html").read_text()
    assert "The two families tie: the best CNN (cnn-" in page  # every fake cell is right on every face
    assert "McNemar" in page and (out / "records.csv").is_file()
    calls.clear()
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and calls == []
    assert again.stderr.count("finished earlier, skipped") == len(expected)


def test_cli_run_unknown_cnn_is_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["run", "--cnn", "resnet9000", "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert "unknown CNN 'resnet9000'; choose from" in result.stderr


KILL_SCRIPT = """
import os, sys, time
from pathlib import Path
from fer_bench.experiment import sweep
from fer_bench.cli import cli
from fer_bench.experiment.harness import cell_id

out = Path(sys.argv[1])

def cell(dataset, features, classifier, out_dir, **settings):
    name = cell_id(features, classifier)
    with open(out / "calls.txt", "a") as stream:
        stream.write(name + "\\n")
    if classifier == "dt" and os.environ.get("HANG_IN_DT"):
        (out / "dt-started").write_text("")
        time.sleep(300)  # killed here
    return {"cell": name, "family": "classic", "status": "ok", "accuracy": 0.5, "f1_macro": 0.5,
            "split": {"test": "PrivateTest"}, "fit_seconds": 0.0, "predict_ms_per_face": 0.0}

sweep.run_classic_cell = cell
cli(["run", "--features", "lbp", "--classifier", "knn,dt,svm", "--data", sys.argv[2], "--out", str(out),
     "--cache-dir", sys.argv[3], "--no-report"], prog_name="fer-bench")
"""


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGKILL])
def test_killed_sweep_resumes_with_only_the_interrupted_cell(tmp_path, signal_number):
    out, command = script_command(tmp_path, KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "HANG_IN_DT": "1"}
    process = start_and_wait(command, (out / "dt-started").exists, "the sweep never reached the second cell", env=env)
    try:
        process.send_signal(signal_number)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    if signal_number == signal.SIGINT:
        assert process.returncode == 130
        assert "interrupted; finished cells are saved" in stderr and "Traceback" not in stderr
    assert sorted(p.name for p in (out / "records").glob("*.json")) == ["lbp__knn.json"]
    assert (out / "calls.txt").read_text().split() == ["lbp__knn", "lbp__dt"]

    (out / "calls.txt").unlink()
    del env["HANG_IN_DT"]
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert (out / "calls.txt").read_text().split() == ["lbp__dt", "lbp__svm"]  # knn skipped, dt reruns
    assert "lbp__knn: finished earlier, skipped" in rerun.stderr


TERM_SCRIPT = """
import os, sys, time
from pathlib import Path
from joblib import Parallel, delayed
from fer_bench.experiment import sweep
from fer_bench.cli import cli

out = Path(sys.argv[1])

def work(index):
    (out / f"worker-{index}.pid").write_text(str(os.getpid()))
    time.sleep(300)  # the sweep is stopped while its workers fit

def cell(dataset, features, classifier, out_dir, **settings):
    Parallel(n_jobs=2, backend="loky")(delayed(work)(i) for i in range(2))

sweep.run_classic_cell = cell
cli(["run", "--features", "lbp", "--classifier", "dt", "--data", sys.argv[2], "--out", str(out),
     "--cache-dir", sys.argv[3], "--no-report"], prog_name="fer-bench")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_sweep_like_ctrl_c_and_its_workers_with_it(tmp_path):
    out, command = script_command(tmp_path, TERM_SCRIPT)
    process = start_and_wait(command, lambda: len(list(out.glob("worker-*.pid"))) == 2, "the workers never started",
                             timeout=90)
    try:
        workers = [int(path.read_text()) for path in out.glob("worker-*.pid")]
        assert all(alive(pid) for pid in workers)
        process.send_signal(signal.SIGTERM)
        # Orphaned workers would hold the pipes open, so communicate() would time out.
        _, stderr = process.communicate(timeout=60)
    except BaseException:
        kill_survivors([int(path.read_text()) for path in out.glob("worker-*.pid")])
        raise
    finally:
        if process.poll() is None:
            process.kill()
    try:
        assert process.returncode == 143  # 128 + SIGTERM, as a shell reports it
        assert "interrupted; finished cells are saved" in stderr and "Traceback" not in stderr
        assert wait_until_dead(workers, 30) == [], "worker processes outlived the stopped sweep"
    finally:  # on failure, leave no sleeping orphans behind
        kill_survivors(workers)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed(tmp_path):
    out, command = script_command(tmp_path, TERM_SCRIPT)
    process = start_and_wait(command, lambda: len(list(out.glob("worker-*.pid"))) == 2, "the workers never started",
                             timeout=90)
    time.sleep(0.2)  # both pid files written in full
    workers = [int(path.read_text()) for path in out.glob("worker-*.pid")]
    try:
        assert all(alive(pid) for pid in workers)
        process.kill()  # SIGKILL: nothing in the parent runs
        process.communicate(timeout=30)
        assert wait_until_dead(workers) == [], "worker processes outlived their killed parent"
    finally:
        kill_survivors(workers)

"""The sweep's plan: which networks each preset trains, the ensemble cells, the time estimates."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fer_bench.cli import cli
from fer_bench.experiment import plan
from fer_bench.experiment.sweep import FEATURE_SETS, Cell, calibrated, preset_networks
from fer_classic.classifiers import CLASSIFIERS


def test_presets_train_the_cpu_networks_and_the_accelerator_preset_all():
    full = preset_networks("full")
    assert "vgg_cpu" in full and "resnet_cpu" in full
    assert not set(plan.ACCELERATOR_NETWORKS) & set(full)
    assert set(plan.ACCELERATOR_NETWORKS) <= set(preset_networks("accelerator"))


def test_the_measured_cells_of_the_main_job_fit_one_night_on_two_cores():
    from fer_deep import DEFAULT_EPOCHS

    # The classifiers of --all with a measured cost (a new one is estimated at DEFAULT_CLASSIC_SECONDS a cell).
    classic = sum(plan.classic_cell_seconds(spec, classifier, plan.FER2013_TRAIN)
                  for spec in FEATURE_SETS for classifier in plan.CLASSIC_SECONDS
                  if not CLASSIFIERS[classifier].needs_words)
    deep = sum(plan.cnn_cell_seconds(arch, DEFAULT_EPOCHS[arch], plan.FER2013_TRAIN, 3589)
               for arch in preset_networks("full"))
    assert classic + deep + 2 * plan.ENSEMBLE_SECONDS <= 10 * 3600
    assert deep > 3600  # the CNNs are most of it, as measured


def test_a_classical_cell_is_estimated_by_the_settings_it_tries():
    # The table's figure is the registry's whole grid; --param fixing a parameter leaves fewer fits.
    n = len(CLASSIFIERS["local_mkl"].grid["linear_weight"])
    whole = plan.classic_cell_seconds("sift_words+hog+lbp+landmarks", "local_mkl", plan.FER2013_TRAIN, flip=True)
    assert whole == 2 * plan.CLASSIC_SECONDS["local_mkl"]["sift_words+hog+lbp+landmarks"]
    assert plan.classic_cell_seconds("sift_words+hog+lbp+landmarks", "local_mkl", plan.FER2013_TRAIN, flip=True,
                                     candidates=n) == whole
    one = plan.classic_cell_seconds("sift_words+hog+lbp+landmarks", "local_mkl", plan.FER2013_TRAIN, flip=True,
                                    candidates=1)
    assert one == pytest.approx(whole * 2 / (n + 1))
    # Measured with nothing else running: the whole grid 1,980 s past the features, one setting 916 s, and
    # every feature of the 64,596 faces extracted anew 580 s.  An estimate may be twice high, a tenth low.
    assert 1980 <= whole * 1.1 and whole <= 2 * 1980
    assert 916 <= one * 1.1 and one <= 2 * 916
    extraction = plan.feature_seconds(["sift_words+hog+lbp+landmarks"], 2 * plan.FER2013_TRAIN + 2 * 3589)
    assert 580 <= extraction <= 2 * 580


def test_flip_tta_doubles_the_estimate_of_classifiers_that_spend_their_time_predicting():
    args = ("sift_words+hog+lbp+landmarks", "local_mkl", plan.FER2013_TRAIN)
    assert plan.classic_cell_seconds(*args, flip=True, tta="flip") == 2 * plan.classic_cell_seconds(*args, flip=True)
    svm = ("hog", "svm", plan.FER2013_TRAIN)
    assert plan.classic_cell_seconds(*svm, tta="flip") == plan.classic_cell_seconds(*svm)


def test_time_left_is_rescaled_by_how_long_finished_cells_took():
    left = plan.TimeLeft([100.0, 200.0, 300.0])
    assert left.seconds() == 600.0
    left.finish(0, 0.0, ran=False)  # skipped: finished earlier
    assert left.seconds() == 500.0
    left.finish(1, 400.0)  # took twice its estimate
    assert left.seconds() == pytest.approx(600.0)
    assert plan.clock(3 * 3600 + 25 * 60 + 10) == "3:25"


def planned(name, family, seconds):
    return Cell(name, family, {}, run=None, describe={}, estimate=seconds)


def test_a_long_plan_scales_its_cnn_estimates_by_this_machines_training_speed(monkeypatch):
    cells = [planned("hog__svm", "classic", 600.0), planned("cnn-vgg_cpu", "deep", 7200.0),
             planned("cnn-resnet_cpu", "deep", 3600.0)]
    lines = []
    monkeypatch.setattr(plan, "training_speed", lambda: 2.5)
    scaled, todo = calibrated(cells, cells[1:], lines.append)
    assert [cell.estimate for cell in scaled] == [600.0, 2880.0, 1440.0]  # the classical cell is left as it is
    assert [cell.estimate for cell in todo] == [2880.0, 1440.0]
    assert lines == [f"CNN estimates scaled to this machine: vgg_cpu trains {2.5 * plan.REFERENCE_RATE:.0f} "
                     f"faces/s here, {plan.REFERENCE_RATE:.0f} on the machine the estimates were measured on"]

    def unavailable():
        raise ImportError("No module named 'keras'")

    monkeypatch.setattr(plan, "training_speed", unavailable)
    lines.clear()
    scaled, _ = calibrated(cells, cells, lines.append)
    assert [cell.estimate for cell in scaled] == [600.0, 7200.0, 3600.0]
    assert "could not time CNN training" in lines[0] and "reference machine's" in lines[0]

    # A short plan is not worth the ten seconds of timing.
    monkeypatch.setattr(plan, "training_speed", lambda: pytest.fail("timed a short plan"))
    short = [planned("cnn-tutorial", "deep", plan.CALIBRATE_ABOVE)]
    assert calibrated(short, short, lines.append) == (short, short)


def test_run_all_plans_with_an_estimate_and_adds_the_fusion(kaggle_dir, tmp_path):
    pytest.importorskip("keras")
    out = tmp_path / "run"
    done = CliRunner().invoke(cli, ["run", "--all", "--features", "hog", "--classifier", "knn,dt", "--cnn",
                                    preset_networks("full")[0], "--epochs", "1", "--data", str(kaggle_dir),
                                    "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    assert done.exit_code == 0, done.output
    assert "plan: 4 cells, 4 to run (2 classical, 1 CNN, 1 ensemble); estimated " in done.stderr
    assert "left)" in done.stderr
    fusion = json.loads((out / "records" / "fusion.json").read_text())
    assert fusion["family"] == "fusion" and len(fusion["members"]) == 2
    assert fusion["members"][1].startswith("cnn-")
    # Nothing is run twice: the rerun plans no cell.
    again = CliRunner().invoke(cli, ["run", "--all", "--features", "hog", "--classifier", "knn,dt", "--cnn",
                                     preset_networks("full")[0], "--epochs", "1", "--data", str(kaggle_dir),
                                     "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    assert again.exit_code == 0, again.output
    assert "plan: 4 cells, 0 to run" in again.stderr

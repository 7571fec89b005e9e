"""The ensemble cell: finished cells of a run folder combined, weighed on the validation split, scored on test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer_bench.cli import cli
from fer_bench.data import load_dataset
from fer_bench.models import load_model, shipped_models


@pytest.fixture
def run_with_two_cells(kaggle_dir, tmp_path):
    out = tmp_path / "run"
    done = CliRunner().invoke(cli, ["run", "--features", "hog", "--classifier", "knn,dt", "--data", str(kaggle_dir),
                                    "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
    assert done.exit_code == 0, done.output
    return out


def test_ensemble_cell_records_members_weights_and_the_test_against_its_best_member(kaggle_dir, run_with_two_cells,
                                                                                      tmp_path):
    out = run_with_two_cells
    done = CliRunner().invoke(cli, ["ensemble", "hog__knn,hog__dt", "--name", "fusion", "--data", str(kaggle_dir),
                                    "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert done.exit_code == 0, done.output
    record = json.loads((out / "records" / "fusion.json").read_text())
    # Two classical members: a classical model for the verdict; a mix would be a fusion.
    assert record["family"] == "classic" and record["ensemble"] is True
    assert record["members"] == ["hog__knn", "hog__dt"]
    assert record["status"] == "ok" and sum(record["weights"]) == pytest.approx(1.0)
    assert record["best_member"] in record["members"]
    assert 0.0 <= record["mcnemar_vs_best_member"]["p_value"] <= 1.0
    # The saved ensemble gives the recorded accuracy on the test split, with predict's labels.
    dataset = load_dataset(kaggle_dir, cache_dir=tmp_path / "cache")
    model = load_model(out / record["model_path"])
    labels = model.predict(dataset.test.X)
    accuracy = np.mean(labels == np.asarray(model.classes_)[dataset.test.y])
    assert accuracy == pytest.approx(record["accuracy"])
    # The report shows it beside its members.
    report = (out / "report.md").read_text()
    assert "## Ensembles and fusion" in report
    assert "| fusion |" in report and "hog__knn (" in report


def test_an_ensemble_of_members_trained_with_other_seeds_records_each_seed(kaggle_dir, run_with_two_cells,
                                                                           tmp_path):
    out, cache = run_with_two_cells, str(tmp_path / "cache")
    done = CliRunner().invoke(cli, ["run", "--features", "lbp", "--classifier", "knn", "--seed", "3", "--data",
                                    str(kaggle_dir), "--out", str(out), "--cache-dir", cache, "--no-report"])
    assert done.exit_code == 0, done.output
    for members, name in (("hog__knn,lbp__knn", "mixed"), ("hog__knn,hog__dt", "same")):
        done = CliRunner().invoke(cli, ["ensemble", members, "--name", name, "--data", str(kaggle_dir),
                                        "--out", str(out), "--cache-dir", cache, "--no-report"])
        assert done.exit_code == 0, done.output
    mixed = json.loads((out / "records" / "mixed.json").read_text())
    assert mixed["seed"] is None and mixed["member_seeds"] == [0, 3]
    same = json.loads((out / "records" / "same.json").read_text())
    assert same["seed"] == 0 and same["member_seeds"] == [0, 0]


def test_ensemble_of_missing_cells_is_one_clear_line(kaggle_dir, run_with_two_cells, tmp_path):
    done = CliRunner().invoke(cli, ["ensemble", "hog__knn,hog__svm", "--data", str(kaggle_dir),
                                    "--out", str(run_with_two_cells), "--cache-dir", str(tmp_path / "cache")])
    assert done.exit_code == 1
    assert done.stderr == f"fer-bench: error: cell hog__svm has no finished record in {run_with_two_cells}; " \
                          f"run it first\n"
    one = CliRunner().invoke(cli, ["ensemble", "hog__knn", "--data", str(kaggle_dir), "--out",
                                   str(run_with_two_cells)])
    assert one.exit_code != 0 and "at least two cells" in one.output
    twice = CliRunner().invoke(cli, ["ensemble", "hog__knn,hog__dt,hog__knn", "--data", str(kaggle_dir), "--out",
                                     str(run_with_two_cells)])
    assert twice.exit_code == 1 and "hog__knn is given twice; name each member once" in twice.output


def test_members_are_scored_once_per_model_file_and_faces(kaggle_dir, run_with_two_cells, tmp_path):
    out = run_with_two_cells

    def ensemble(cells, name):
        done = CliRunner().invoke(cli, ["ensemble", cells, "--name", name, "--data", str(kaggle_dir), "--out",
                                        str(out), "--cache-dir", str(tmp_path / "cache"), "--no-report"])
        assert done.exit_code == 0, done.output
        return done.stderr, json.loads((out / "records" / f"{name}.json").read_text())

    first_log, first = ensemble("hog__knn,hog__dt", "pair")
    assert first_log.count("scoring") == 4  # two members, on the validation and the test faces
    # The timing, after the accuracy is known, says what the command is still doing.
    assert first_log.index("pair: weights") < first_log.index("pair: timing predictions in a one-thread process")
    stored = sorted((out / "predictions" / "members").glob("*.npz"))
    assert len(stored) == 4 and {path.name.split(".")[0] for path in stored} == {"hog__knn", "hog__dt"}
    again_log, again = ensemble("hog__dt,hog__knn", "pair_again")  # the same members, in another order
    assert "scoring" not in again_log
    assert again["accuracy"] == first["accuracy"] and sorted(again["weights"]) == sorted(first["weights"])

    stored[0].write_bytes(b"not an array")  # a damaged file is computed again, not used
    damaged_log, damaged = ensemble("hog__knn,hog__dt", "pair_damaged")
    assert damaged_log.count("scoring") == 1 and damaged["accuracy"] == first["accuracy"]
    with np.load(stored[0], allow_pickle=False) as again_stored:
        assert again_stored["probabilities"].shape[1] == 7


def test_shipped_members_are_named_checked_against_the_data_and_refused_when_unknown(kaggle_dir, run_with_two_cells,
                                                                                     tmp_path):
    def ensemble(cells):
        return CliRunner().invoke(cli, ["ensemble", cells, "--data", str(kaggle_dir), "--out", str(run_with_two_cells),
                                        "--cache-dir", str(tmp_path / "cache"), "--no-report"])

    other_data = ensemble("hog__knn,shipped:svm")  # the shipped models were trained on FER-2013
    assert other_data.exit_code == 1
    assert other_data.stderr.startswith("fer-bench: error: cell shipped:svm was trained on other data")
    unknown = ensemble("hog__knn,shipped:nope")
    names = ", ".join(sorted(record["name"] for record in shipped_models()))
    assert unknown.exit_code == 1
    assert unknown.stderr == f"fer-bench: error: no shipped model named 'nope' (shipped: {names}); " \
                             f"`fer-bench models` lists them\n"
    assert not (run_with_two_cells / "records" / "ensemble-hog__knn-shipped-nope.json").exists()


def test_the_shipped_fusion_is_rebuilt_from_the_shipped_models_it_refers_to(fer2013_dir, tmp_path):
    """`fer-bench ensemble shipped:cnn,shipped:svm` in a new folder weighs and scores what the shipped fusion says."""
    shipped = {record["name"]: record for record in shipped_models()}
    fusion = shipped["fusion"]
    members = [f"shipped:{fusion['shipped_members'][member]}" for member in fusion["members"]]
    out = tmp_path / "new-run"
    done = CliRunner().invoke(cli, ["ensemble", ",".join(members), "--name", "fusion", "--data", str(fer2013_dir),
                                    "--out", str(out)])
    assert done.exit_code == 0, done.output
    record = json.loads((out / "records" / "fusion.json").read_text())
    assert record["family"] == "fusion" and record["members"] == members
    assert record["weights"] == pytest.approx(fusion["weights"])
    assert record["accuracy"] == pytest.approx(fusion["accuracy"], abs=0.0005)
    for member in members:  # each member's own accuracy is the shipped record's
        assert record["member_accuracies"][member] == pytest.approx(shipped[member[8:]]["accuracy"], abs=0.0005)
    assert record["best_member"] == f"shipped:{fusion['shipped_members'][fusion['best_member']]}"
    # The ensemble refers to the shipped files instead of copying them, and loads through them.
    model_path = out / record["model_path"]
    assert model_path.stat().st_size < 20_000
    assert load_model(model_path).shipped == {member: (member[8:], Path(shipped[member[8:]]["path"]))
                                              for member in members}
    report = (out / "report.md").read_text()
    assert "no classical and no deep cell of its own, only fusions of the two" in report
    first = members[0][8:]
    assert f"shipped:{first} ({fusion['weights'][0]:.2f}, {100 * shipped[first]['accuracy']:.1f}%)" in report

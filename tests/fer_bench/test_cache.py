"""The on-disk caches: plain arrays only, verified on load, private, usable read-only; `fer-bench cache`; signals.

Every tampered entry (a pickle that would run code, zeros under the old key,
fewer rows, another entry's file) must be detected and rebuilt with one
warning, and the figures must be those of a clean run.
"""

from __future__ import annotations

import json
import os
import pickle
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from fer_bench._core import CacheWarning, array_digest, read_cached_arrays, save_cached_arrays
from fer_bench.cache import cache_info, clear_cache
from fer_bench.cli import cli
from fer_bench.data import load_fer2013_folders
from fer_classic.features import make_features, transform_faces
from conftest import alive, kill_survivors, synthetic_faces, wait_until_dead, write_kaggle_layout

REPO = Path(__file__).resolve().parents[2]


class OpensMarker:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if a cache ever unpickles it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_payload(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(OpensMarker(marker)))


def rewrite(path: Path, *, keep_record: bool, **arrays) -> None:
    """Re-save the cache file ``path`` with ``arrays`` in place of its own.

    ``keep_record``: leave its record of shapes, dtypes and digests as it was
    (a careless edit); otherwise record the new arrays' (a forger who knows the format).
    """
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(str(archive["_meta"]))
        content = {name: archive[name] for name in archive.files if name != "_meta"}
    content.update(arrays)
    if not keep_record:
        meta["arrays"] = {name: {"shape": list(a.shape), "dtype": a.dtype.str, "sha256": array_digest(a)}
                          for name, a in content.items()}
    np.savez(path, **content, _meta=np.array(json.dumps(meta)))


# ----------------------------------------------------------------------------- the file format


def test_cache_files_hold_plain_arrays_and_refuse_anything_else(tmp_path):
    path = tmp_path / "entry.npz"
    record = {"what": "test"}
    save_cached_arrays(path, {"a": np.arange(6).reshape(2, 3)}, record)
    np.testing.assert_array_equal(read_cached_arrays(path, record)["a"], np.arange(6).reshape(2, 3))
    with pytest.raises(TypeError, match="Python objects"):
        save_cached_arrays(tmp_path / "objects.npz", {"a": np.array([{}, None], dtype=object)}, record)
    with pytest.raises(ValueError, match="made for other inputs"):
        read_cached_arrays(path, {"what": "else"})
    marker = tmp_path / "ran"
    write_payload(path, marker)
    with pytest.raises(ValueError, match="not an array archive"):
        read_cached_arrays(path, record)
    assert not marker.exists()


# ----------------------------------------------------------------------------- the feature cache


def test_a_pickle_in_place_of_a_feature_entry_is_not_run_and_is_rebuilt(tmp_path):
    X, _ = synthetic_faces(40)
    memory = tmp_path / "features"
    extractor = make_features("hog+lbp").fit(X)
    clean = transform_faces(extractor, X, memory=memory)
    entries = sorted(memory.rglob("*.npz"))
    assert len(entries) == 2 and all(path.parent.name in ("hog", "lbp") for path in entries)
    marker = tmp_path / "ran"
    for path in entries:
        write_payload(path, marker)
    with pytest.warns(CacheWarning, match="not an array archive") as caught:
        again = transform_faces(extractor, X, memory=memory)
    assert len(caught) == 2 and not marker.exists()
    np.testing.assert_array_equal(again, clean)
    for path in entries:  # rebuilt as arrays
        with np.load(path, allow_pickle=False) as archive:
            assert "features" in archive.files


@pytest.mark.parametrize("tamper, message", [
    ("zeros_same_record", "do not match its SHA-256"),
    ("fewer_rows_forged", "features for 40 faces"),
    ("other_entry", "made for other inputs"),
])
def test_a_tampered_feature_entry_is_detected_and_rebuilt(tmp_path, tamper, message):
    X, _ = synthetic_faces(40)
    memory = tmp_path / "features"
    hog = make_features("hog").fit(X)
    clean = transform_faces(hog, X, memory=memory)
    (path,) = memory.rglob("*.npz")
    if tamper == "zeros_same_record":
        rewrite(path, keep_record=True, features=np.zeros_like(clean))
    elif tamper == "fewer_rows_forged":
        rewrite(path, keep_record=False, features=clean[:-1])
    else:  # the entry of other faces copied over this one
        transform_faces(hog, X[:10], memory=memory)
        other = next(p for p in memory.rglob("*.npz") if p != path)
        path.write_bytes(other.read_bytes())
    with pytest.warns(CacheWarning, match=message):
        np.testing.assert_array_equal(transform_faces(hog, X, memory=memory), clean)
    np.testing.assert_array_equal(transform_faces(hog, X, memory=memory), clean)  # rebuilt: no second warning


# ----------------------------------------------------------------------------- the decoded-array cache


@pytest.mark.parametrize("tamper, message", [
    ("pickle", "not an array archive"),
    ("zeros_same_record", "do not match its SHA-256"),
    ("zeros_forged", "faces differ from the image files"),
    ("fewer_rows_forged", "holds 40 faces for 42 files"),
    ("wrong_dtype_forged", r"no faces X of shape \(n, 48, 48\) uint8"),
])
def test_a_tampered_arrays_cache_is_detected_and_rebuilt(tmp_path, tamper, message):
    data = write_kaggle_layout(tmp_path / "fer2013", per_class=2)
    cache = tmp_path / "cache"
    clean = load_fer2013_folders(data, cache_dir=cache)
    (path,) = cache.glob("arrays-v*.npz")
    with np.load(path) as archive:
        X = archive["X"]
    marker = tmp_path / "ran"
    if tamper == "pickle":
        write_payload(path, marker)
    elif tamper == "zeros_same_record":
        rewrite(path, keep_record=True, X=np.zeros_like(X))
    elif tamper == "zeros_forged":
        rewrite(path, keep_record=False, X=np.zeros_like(X))
    elif tamper == "fewer_rows_forged":
        rewrite(path, keep_record=False, X=X[:40])
    else:
        rewrite(path, keep_record=False, X=X.astype(np.float32))
    with pytest.warns(CacheWarning, match=message):
        loaded = load_fer2013_folders(data, cache_dir=cache)
    assert not marker.exists()
    assert loaded.content_key == clean.content_key
    for split, expected in zip(loaded.splits, clean.splits):
        np.testing.assert_array_equal(split.X, expected.X)
    assert read_cached_arrays(path, {"dataset_arrays": path.name})["X"].shape == X.shape  # rebuilt


def test_a_tampered_csv_arrays_cache_is_rebuilt(tmp_path):
    from fer_bench.data import load_fer2013_csv, write_fer2013_csv

    csv_path = tmp_path / "fer2013.csv"
    write_fer2013_csv(load_fer2013_folders(write_kaggle_layout(tmp_path / "d", per_class=2), cache_dir=False), csv_path)
    cache = tmp_path / "cache"
    clean = load_fer2013_csv(csv_path, cache_dir=cache)
    (path,) = cache.glob("arrays-v*.npz")
    with np.load(path) as archive:
        y = archive["y"]
    rewrite(path, keep_record=False, y=y[:-3])
    with pytest.warns(CacheWarning, match="labels and faces differ in number"):
        loaded = load_fer2013_csv(csv_path, cache_dir=cache)
    np.testing.assert_array_equal(loaded.test.y, clean.test.y)


# ----------------------------------------------------------------------------- a whole run


def run_cell(data, out, cache, classifier="knn", select=False):
    """``fer-bench run`` of one HOG cell; the result and the record's figures."""
    result = CliRunner().invoke(cli, ["run", "--features", "hog", "--classifier", classifier, "--data", str(data),
                                      "--out", str(out), "--cache-dir", str(cache), "--no-report",
                                      "--select" if select else "--no-select"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "records" / f"hog__{classifier}.json").read_text())
    return result, {key: record[key] for key in ("accuracy", "validation_accuracy", "f1_macro", "confusion_matrix", "dataset_key", "n_train")}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    """A few hundred faces (15 per class and usage), run once with a fresh cache: the figures to match."""
    root = tmp_path_factory.mktemp("clean")
    data = write_kaggle_layout(root / "fer2013", per_class=15)
    _, figures = run_cell(data, root / "run", root / "cache")
    return data, root / "cache", figures


@pytest.mark.parametrize("tamper", ["pickle", "zeros_same_record"])
def test_a_run_on_tampered_caches_runs_no_code_and_gives_the_clean_figures(tmp_path, clean_run, tamper):
    import shutil

    data, clean_cache, figures = clean_run
    cache = tmp_path / "cache"
    shutil.copytree(clean_cache, cache)
    entries = sorted(cache.glob("arrays-v*.npz")) + sorted((cache / "features").rglob("*.npz"))
    assert len(entries) == 4  # the decoded faces and the HOG vectors of the three splits
    marker = tmp_path / "ran"
    # Where the joblib cache of earlier versions kept its pickles: never read.
    write_payload(cache / "features" / "joblib" / "fer_classic" / "features" / "_extract_part" / "0" / "output.pkl",
                  marker)
    for path in entries:
        if tamper == "pickle":
            write_payload(path, marker)
        else:
            with np.load(path) as archive:
                zeros = {name: np.zeros_like(archive[name]) for name in archive.files if name != "_meta"}
            rewrite(path, keep_record=True, **zeros)
    result, tampered = run_cell(data, tmp_path / "run", cache)
    assert not marker.exists()
    assert tampered == figures  # the clean accuracy, confusion and dataset key
    warnings = [line for line in result.stderr.splitlines() if line.startswith("fer-bench: warning: cache file")]
    assert len(warnings) == len(entries), result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- the cache folder


def test_the_cache_folder_is_created_private(tmp_path):
    cache = tmp_path / "new" / "cache"
    X, _ = synthetic_faces(10)
    transform_faces(make_features("hog").fit(X), X, memory=cache / "features")
    load_fer2013_folders(write_kaggle_layout(tmp_path / "d", per_class=1), cache_dir=cache)
    for folder in (cache, cache / "features", cache / "features" / "hog"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def test_a_cache_folder_that_cannot_be_created_costs_one_warning(tmp_path, clean_run):
    data, _, figures = clean_run
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # The decision tree's settings are tried in worker processes, which read the features too: no warning there.
    result, unusable = run_cell(data, tmp_path / "run", blocker / "cache", classifier="dt", select=True)
    assert "in parallel" in result.stderr
    assert unusable["dataset_key"] == figures["dataset_key"]
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot be written" in warnings[0] and "slower" in warnings[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def read_only_folders(tmp_path_factory):
    """Skip where a folder without write permission can be written (root with CAP_DAC_OVERRIDE)."""
    probe = tmp_path_factory.mktemp("probe")
    probe.chmod(0o500)
    try:
        (probe / "file").touch()
    except PermissionError:
        return
    finally:
        probe.chmod(0o700)
    pytest.skip("this user writes into read-only folders (root with CAP_DAC_OVERRIDE)")


@pytest.mark.parametrize("holds_entries", [True, False])
def test_a_read_only_cache_folder_is_read_and_costs_one_warning(read_only_folders, clean_run, tmp_path, monkeypatch,
                                                                holds_entries):
    import shutil

    import fer_bench.data

    data, clean_cache, figures = clean_run
    cache = tmp_path / "cache"
    if holds_entries:
        shutil.copytree(clean_cache, cache)

        def no_decoding(paths):
            raise AssertionError("decoded again although the read-only cache holds the faces")

        monkeypatch.setattr(fer_bench.data, "_decode_all", no_decoding)
    else:
        cache.mkdir()  # nothing to read, and every save refused
    folders = [cache, *[p for p in cache.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o500)
    try:
        result, read_only = run_cell(data, tmp_path / "run", cache)
    finally:
        for folder in folders:
            folder.chmod(0o700)
    assert read_only == figures
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "cannot be written" in warnings[0], result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------------------- fer-bench cache info|clear


def test_cache_info_and_clear(tmp_path):
    cache = tmp_path / "cache"
    X, _ = synthetic_faces(10)
    transform_faces(make_features("hog+lbp").fit(X), X, memory=cache / "features")
    load_fer2013_folders(write_kaggle_layout(tmp_path / "d", per_class=1), cache_dir=cache)
    (cache / "arrays-v1-0123456789abcdef0123.npz").write_bytes(b"from an earlier version")
    write_payload(cache / "features" / "joblib" / "f" / "output.pkl", tmp_path / "ran")
    (cache / "notes.txt").write_text("not the cache's")
    old = time.time() - 10 * 86400
    for path in cache.rglob("*.npz"):
        if path.parent.name == "lbp":
            os.utime(path, (old, old))

    result = CliRunner().invoke(cli, ["cache", "info", "--cache-dir", str(cache), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert {kind: entry["files"] for kind, entry in info["kinds"].items()} == {
        "datasets": 1, "features": 2, "stale": 2, "unfinished": 0}
    assert info["other_files"] == 1 and info["mode"] == "0700"
    table = CliRunner().invoke(cli, ["cache", "info", "--cache-dir", str(cache)])
    assert "extracted features" in table.stdout and "not the cache's" in table.stdout

    result = CliRunner().invoke(cli, ["cache", "clear", "--cache-dir", str(cache), "--older-than", "7"])
    assert result.exit_code == 0 and "removed 1 file(s)" in result.stdout, result.output
    assert not (cache / "features" / "lbp").exists() and list((cache / "features" / "hog").glob("*.npz"))
    result = CliRunner().invoke(cli, ["cache", "clear", "--cache-dir", str(cache)])
    assert result.exit_code == 0 and "removed 4 file(s)" in result.stdout, result.output
    assert sorted(p.name for p in cache.rglob("*")) == ["notes.txt"]  # only what is not the cache's is left
    assert not (tmp_path / "ran").exists()
    assert cache_info(tmp_path / "absent")["exists"] is False
    assert clear_cache(tmp_path / "absent")["removed"] == 0
    bad = CliRunner().invoke(cli, ["cache", "clear", "--older-than", "-1", "--cache-dir", str(cache)])
    assert bad.exit_code == 1 and "--older-than" in bad.stderr


# ----------------------------------------------------------------------------- signals and workers


def _children(pid: int) -> list:
    """Process ids whose parent is ``pid``, read from /proc."""
    found = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat_path.parent.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_serve_workers_end_when_the_server_is_killed(tmp_path):
    pytest.importorskip("dlib")
    pytest.importorskip("flask")
    pytest.importorskip("waitress")
    from fer_classic.model import ClassicModel

    X, y = synthetic_faces(70, seed=1)
    model = ClassicModel("hog", "svm", classifier_params={"pca_components": 10}).fit(X, y).save(tmp_path / "m.skops")
    process = subprocess.Popen([sys.executable, "-m", "fer_bench.cli", "serve", "--model", str(model), "--port", "0",
                                "--workers", "2"], env={**os.environ, "PYTHONPATH": str(REPO)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = []
    try:
        url = process.stdout.readline().strip()  # printed once every worker has loaded the model
        assert url.startswith("http://127.0.0.1:"), process.stderr.read() if process.poll() is not None else url
        workers = _children(process.pid)
        assert len(workers) >= 2 and all(alive(pid) for pid in workers)  # the two workers (and spawn's tracker)
        process.kill()  # SIGKILL: the server cannot shut its pool down
        process.wait(timeout=30)  # (not communicate: workers left alive would hold its pipes open)
        assert wait_until_dead(workers) == [], "serve's worker processes outlived the killed server"
    finally:
        kill_survivors(workers)
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)

"""Bad input as a careful user and a reviewer would try it (issue 18): one clear line, exit 1, nothing else touched.

Every case is built in ``tmp_path`` and run through the command line in
process (click's ``CliRunner``): the exit status, the one-line message
without a traceback, and that no file outside the command's output changed.
Outputs are checked before any work (a cache folder that is never created
shows the dataset was not even loaded).  The fuzz tests at the end feed the
dataset loader and ``predict`` a few dozen malformed files.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

cv2 = pytest.importorskip("cv2")

from fer_bench import _core, media  # noqa: E402
from fer_bench.cli import cli  # noqa: E402
from fer_bench.data import (MIN_FACES_A_CLASS, DatasetError, check_splits, load_dataset,  # noqa: E402
                            load_fer2013_csv)
from fer_bench.experiment.harness import read_record, save_predictions  # noqa: E402
from fer_bench.experiment.sweep import finished_record  # noqa: E402
from fer_bench.outputs import OutputError, describe_os_error, output_file, output_folder  # noqa: E402
from conftest import synthetic_faces  # noqa: E402

CLASSES3 = ("angry", "happy", "sad")
USAGES = ("Training", "PublicTest", "PrivateTest")


# --------------------------------------------------------------------------- helpers


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header announces ``width`` x ``height`` pixels, with almost no data behind it."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b""))


def encoded(extension: str, image=None) -> bytes:
    image = synthetic_faces(1, seed=3)[0][0] if image is None else image
    ok, data = cv2.imencode(extension, image)
    assert ok
    return data.tobytes()


def class_folders(root: Path, per_class: int = 10, classes=CLASSES3) -> Path:
    """Class folders of synthetic faces (PNG, lossless)."""
    X, y = synthetic_faces(per_class * len(classes), seed=0, n_classes=len(classes))
    for i, (face, label) in enumerate(zip(X, y)):
        folder = root / classes[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:03d}.png"), face)
    return root


def csv_text(n: int = 21, usage=lambda i: USAGES[i % 3]) -> str:
    X, y = synthetic_faces(n, seed=2)
    lines = ["emotion,pixels,Usage"]
    for i, (face, label) in enumerate(zip(X, y)):
        lines.append(f"{label},{' '.join(map(str, face.ravel()))},{usage(i)}")
    return "\n".join(lines) + "\n"


def snapshot(root: Path) -> dict:
    """Every file and folder below ``root`` with its size and modification time."""
    return {str(p): (p.is_dir() or p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def invoke(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def one_line_error(result, *fragments) -> str:
    """Assert exit status 1 and a single 'fer-bench: error:' line holding every fragment, without a traceback."""
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("fer-bench: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert str(fragment) in errors[0], errors[0]
    return errors[0]


def unwritable(folder: Path) -> Path:
    """``folder`` made read-only; skips the test where permissions do not bind (root)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        folder.chmod(0o755)
        pytest.skip("permissions do not bind for this user (root)")
    return folder


@pytest.fixture
def restore_modes(tmp_path):
    """Give every folder below tmp_path its permissions back, so pytest can clean up."""
    yield
    for path in [tmp_path, *tmp_path.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A tiny HOG + SVM model (labels meaningless, interface real)."""
    from fer_classic.model import ClassicModel

    X, y = synthetic_faces(70, seed=1)
    model = ClassicModel("hog", "svm", classifier_params={"pca_components": 10}).fit(X, y)
    return model.save(tmp_path_factory.mktemp("model") / "tiny.skops")


@pytest.fixture
def work(tmp_path, model_file):
    """tmp_path with a dataset, a model and a photo; returns tmp_path."""
    class_folders(tmp_path / "data")
    shutil.copy(model_file, tmp_path / "model.skops")
    cv2.imwrite(str(tmp_path / "photo.png"), np.random.default_rng(0).integers(0, 255, (80, 100, 3), np.uint8))
    return tmp_path


def run_args(work, out, *extra):
    return ("run", "--features", "hog", "--classifier", "knn", "--preset", "quick", "--data", work / "data",
            "--out", out, "--cache-dir", work / "cache", "--no-report", *extra)


# --------------------------------------------------------------------------- outputs are checked before any work


def test_run_out_that_is_a_file(work):
    (work / "out").write_text("keep me")
    before = snapshot(work)
    line = one_line_error(invoke(*run_args(work, work / "out")), "--out", work / "out", "a file, not a folder")
    assert line.startswith("fer-bench: error: --out")
    assert snapshot(work) == before and not (work / "cache").exists()  # nothing loaded, nothing written


def test_run_out_whose_parent_is_a_file(work):
    (work / "file").write_text("keep me")
    before = snapshot(work)
    one_line_error(invoke(*run_args(work, work / "file" / "out")), "--out", "the folder cannot be created",
                   "Not a directory")
    assert snapshot(work) == before


def test_run_out_inside_the_data_folder(work):
    before = snapshot(work)
    one_line_error(invoke(*run_args(work, work / "data" / "runs")), "--out", "inside the data folder", work / "data")
    assert snapshot(work) == before and not (work / "data" / "runs").exists()


def test_run_out_with_a_records_file_where_the_folder_goes(work):
    (work / "out").mkdir()
    (work / "out" / "records").write_text("not a folder")
    before = snapshot(work)
    one_line_error(invoke(*run_args(work, work / "out")), "--out", "records is a file where a folder is written")
    assert snapshot(work) == before and not (work / "cache").exists()


def test_run_out_unwritable(work, restore_modes):
    unwritable(work / "out")
    before = snapshot(work)
    one_line_error(invoke(*run_args(work, work / "out")), "--out", "cannot write in", "Permission denied")
    assert snapshot(work) == before and not (work / "cache").exists()


def test_output_folder_creates_missing_parents(tmp_path):
    out = output_folder(tmp_path / "a" / "b" / "out", "--out")
    assert out.is_dir() and list(out.iterdir()) == []


def test_train_cnn_out_is_checked_before_keras_and_data(work):
    (work / "out").write_text("keep me")
    before = snapshot(work)
    one_line_error(invoke("train", "cnn", "--data", work / "data", "--out", work / "out", "--cache-dir",
                          work / "cache"), "--out", "a file, not a folder")
    assert snapshot(work) == before


def test_ensemble_out_checked_first(work):
    (work / "out").write_text("keep me")
    one_line_error(invoke("ensemble", "a,b", "--data", work / "data", "--out", work / "out", "--cache-dir",
                          work / "cache"), "--out", "a file, not a folder")
    one_line_error(invoke("ensemble", "a,b", "--data", work / "data", "--out", work / "none", "--cache-dir",
                          work / "cache"), "--out", "no such folder")
    assert not (work / "cache").exists() and not (work / "none").exists()


def evaluate_args(work, out, *extra):
    return ("evaluate", work / "model.skops", "--data", work / "data", "--out", out, "--cache-dir", work / "cache",
            "--resamples", 10, *extra)


@pytest.mark.parametrize("case", ["a file", "inside the data folder", "whose parent is a file", "evaluations file"])
def test_evaluate_out_is_checked_before_any_work(work, case):
    if case == "a file":
        out, fragments = work / "out", ("a file, not a folder",)
        out.write_text("keep me")
    elif case == "inside the data folder":
        out, fragments = work / "data" / "scores", ("inside the data folder", work / "data")
    elif case == "whose parent is a file":
        (work / "file").write_text("keep me")
        out, fragments = work / "file" / "out", ("the folder cannot be created", "Not a directory")
    else:
        out, fragments = work / "out", ("evaluations is a file where a folder is written",)
        out.mkdir()
        (out / "evaluations").write_text("keep me")
    before = snapshot(work)
    line = one_line_error(invoke(*evaluate_args(work, out)), "--out", *fragments)
    assert line.startswith(f"fer-bench: error: --out {out}")
    assert snapshot(work) == before and not (work / "cache").exists()  # no dataset loaded, nothing written


def test_evaluate_out_unwritable(work, restore_modes):
    out = unwritable(work / "out")
    before = snapshot(work)
    one_line_error(invoke(*evaluate_args(work, out)), "--out", "cannot write in", "Permission denied")
    assert snapshot(work) == before and not (work / "cache").exists()


def test_evaluate_out_inside_a_second_data_folder(work):
    class_folders(work / "other")
    before = snapshot(work)
    one_line_error(invoke(*evaluate_args(work, work / "other" / "out"), "--data", work / "other"),
                   "--out", "inside the data folder", work / "other")
    assert snapshot(work) == before


def test_evaluate_models_checks_its_folder_first(work):
    from fer_bench.evaluate import evaluate_models

    (work / "out").write_text("keep me")
    with pytest.raises(OutputError, match="out_dir .*out: a file, not a folder"):
        evaluate_models([work / "model.skops"], [work / "data"], work / "out", cache_dir=work / "cache")
    assert not (work / "cache").exists()


def test_deploy_refuses_the_model_itself_and_a_missing_folder(work):
    before = snapshot(work)
    model = work / "model.skops"
    one_line_error(invoke("deploy", model, model), "OUT", "is the model file of this command")
    one_line_error(invoke("deploy", model, work / "nofolder" / "fast.skops"), "OUT", "does not exist")
    assert snapshot(work) == before


def test_export_refuses_the_model_itself_before_loading_it(work):
    before = snapshot(work)
    model = work / "model.skops"
    one_line_error(invoke("export", model, "--out", model), "--out", "is the model file of this command")
    one_line_error(invoke("export", model, "--out", work / "nofolder" / "m.onnx"), "--out", "does not exist")
    assert snapshot(work) == before


def test_explain_out_that_is_a_file(work):
    (work / "out").write_text("keep me")
    one_line_error(invoke("explain", work / "model.skops", work / "photo.png", "--out", work / "out"),
                   "--out", "a file, not a folder")


def test_predict_json_that_is_an_input_keeps_the_input(work):
    before = snapshot(work)
    photo = work / "photo.png"
    one_line_error(invoke("predict", work / "model.skops", photo, "--json", photo), "--json", photo,
                   "is an input of this command")
    assert snapshot(work) == before


def test_predict_csv_that_is_the_model_keeps_the_model(work):
    before = snapshot(work)
    model = work / "model.skops"
    one_line_error(invoke("predict", model, work / "photo.png", "--csv", model), "--csv",
                   "is the model file of this command")
    assert snapshot(work) == before


def test_predict_json_inside_an_input_folder_with_a_photo_name(work):
    photos = work / "photos"
    photos.mkdir()
    shutil.copy(work / "photo.png", photos / "a.png")
    before = snapshot(work)
    one_line_error(invoke("predict", work / "model.skops", photos, "--json", photos / "a.png"), "--json",
                   "inside the input folder")
    assert snapshot(work) == before


def test_predict_json_and_csv_the_same_file(work):
    out = work / "records.txt"
    one_line_error(invoke("predict", work / "model.skops", work / "photo.png", "--json", out, "--csv", out),
                   "--json", "is also --csv")
    assert not out.exists()


def test_predict_json_in_a_missing_folder_names_the_option(work):
    before = snapshot(work)
    one_line_error(invoke("predict", work / "model.skops", work / "photo.png", "--json", work / "no" / "r.json"),
                   "--json", work / "no" / "r.json", "does not exist")
    assert snapshot(work) == before


def test_predict_json_in_an_unwritable_folder(work, restore_modes):
    folder = unwritable(work / "ro")
    one_line_error(invoke("predict", work / "model.skops", work / "photo.png", "--json", folder / "r.json"),
                   "--json", "Permission denied")


def test_predict_annotate_unwritable_or_inside_an_input(work, restore_modes):
    (work / "file").write_text("x")
    one_line_error(invoke("predict", work / "model.skops", work / "photo.png", "--annotate", work / "file" / "a"),
                   "--annotate", "the folder cannot be created")
    photos = work / "photos"
    photos.mkdir()
    one_line_error(invoke("predict", work / "model.skops", photos, "--annotate", photos / "annotated"),
                   "--annotate", "inside the input folder")
    assert not (photos / "annotated").exists()
    folder = unwritable(work / "ro")
    one_line_error(invoke("predict", work / "model.skops", work / "photo.png", "--annotate", folder / "a"),
                   "--annotate", "Permission denied")


def test_report_run_dir_unwritable(tmp_path, restore_modes):
    run = finished_run(tmp_path / "run")
    unwritable(run)
    before = snapshot(tmp_path)
    one_line_error(invoke("report", run), "RUN_DIR", "cannot write in")
    assert snapshot(tmp_path) == before


def test_an_os_error_during_the_work_is_one_line_naming_the_option(tmp_path, monkeypatch):
    import fer_bench.report

    run = finished_run(tmp_path / "run")

    def full_disk(run_dir, **kwargs):
        raise OSError(28, "No space left on device", str(run_dir / "report.html"))

    monkeypatch.setattr(fer_bench.report, "write_report", full_disk)
    line = one_line_error(invoke("report", run), "RUN_DIR", run / "report.html", "No space left on device")
    assert line == f"fer-bench: error: RUN_DIR {run}: {run / 'report.html'}: No space left on device"


def test_describe_os_error():
    error = PermissionError(13, "Permission denied", "/r/out/records/a.json")
    assert describe_os_error(error, [("--json", None), ("--out", "/r/out")]) == \
        "--out /r/out: /r/out/records/a.json: Permission denied"
    assert describe_os_error(PermissionError(13, "Permission denied", "/r/out"), [("--out", "/r/out")]) == \
        "--out /r/out: Permission denied"
    assert describe_os_error(OSError(5, "Input/output error", "/elsewhere/x")) == "/elsewhere/x: Input/output error"
    assert describe_os_error(FileNotFoundError("model 'x' not found")) == "model 'x' not found"


def test_output_file_keeps_an_existing_file(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("old")
    assert output_file(path, "--json") == path and path.read_text() == "old"
    with pytest.raises(OutputError, match="a folder, not a file"):
        output_file(tmp_path, "--json")


# --------------------------------------------------------------------------- the dataset loader


def load_error(path, *fragments) -> str:
    with pytest.raises(DatasetError) as info:
        load_dataset(path, cache_dir=False)
    message = str(info.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


@pytest.mark.parametrize("size, shown", [((40000, 40000), "more than 178 megapixels"),
                                         ((13000, 12000), "13000x12000 = 156 megapixels")])
def test_a_huge_png_header_is_refused_by_the_shared_limit(tmp_path, model_file, size, shown):
    data = class_folders(tmp_path / "data")
    huge = data / "happy" / "huge.png"
    huge.write_bytes(png_header(*size))
    load_error(data, huge, "image too large", shown, "the limit is 150")
    result = invoke("data", "info", "--data", data, "--cache-dir", tmp_path / "cache")
    one_line_error(result, huge, "image too large")
    # predict refuses the same file with the same words: one limit
    result = invoke("predict", model_file, huge)
    assert result.exit_code == 1 and f"{huge}: image too large ({shown}; the limit is 150)" in result.stderr
    assert media.MAX_IMAGE_PIXELS is _core.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("name, content, fragment", [
    ("empty.png", b"", "empty file (0 bytes)"),
    ("fake.png", b"GIF89a" + bytes(200), "not an image OpenCV can decode"),
    ("text.jpg", b"hello, not a photo\n", "not an image OpenCV can decode"),
    ("cut.png", "png-half", "not an image OpenCV can decode"),
    ("cut.jpg", "jpg-half", "truncated JPEG"),
])
def test_undecodable_images_name_the_file_and_the_fault(tmp_path, name, content, fragment):
    data = class_folders(tmp_path / "data")
    if content == "png-half":
        whole = encoded(".png", np.random.default_rng(1).integers(0, 255, (48, 48), np.uint8))
        content = whole[: len(whole) // 2]
    elif content == "jpg-half":
        whole = encoded(".jpg")
        content = whole[: len(whole) // 2]
    (data / "sad" / name).write_bytes(content)
    load_error(data, data / "sad" / name, fragment, "1 image file(s) could not be decoded")


def jpeg_with_thumbnail(image, thumbnail) -> bytes:
    """A JPEG holding a whole small JPEG (with its own end marker) in an APP1 segment, as an Exif thumbnail does."""
    main, small = encoded(".jpg", image), encoded(".jpg", thumbnail)
    payload = b"Exif\0\0" + small
    return main[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + main[2:]


def test_jpeg_truncated_walks_the_segments():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 255, (120, 160, 3), np.uint8)
    for whole in (encoded(".jpg", image), jpeg_with_thumbnail(image, image[:40, :40])):
        assert not media.jpeg_truncated(whole)
        for share in (0.02, 0.1, 0.5, 0.9, 0.99):
            assert media.jpeg_truncated(whole[: int(len(whole) * share)]), share
        assert media.jpeg_truncated(whole[:-2])  # only the end marker missing
        # what follows a whole image (a motion photo's video, a maker's trailer) is not a cut
        assert not media.jpeg_truncated(whole + b"\0\0\0\x18ftypmp42" + rng.bytes(5000))
    cut = jpeg_with_thumbnail(image, image[:40, :40])[:-100]
    assert b"\xff\xd9" in cut  # the thumbnail's end marker does not make a cut image whole
    assert media.jpeg_truncated(cut)


def test_predict_refuses_a_truncated_jpeg_and_goes_on(tmp_path, model_file):
    # A truncated JPEG is one failed input, not records: OpenCV would fill the missing part with gray, so a face
    # there would come out as "no face" and one across the cut labelled from a half-gray crop, with nothing in the
    # records to say which (fer_bench.media.decode_image); the error line and exit status 1 say it.
    photos = tmp_path / "photos"
    photos.mkdir()
    whole = encoded(".jpg", np.random.default_rng(6).integers(0, 255, (120, 160, 3), np.uint8))
    (photos / "a_whole.jpg").write_bytes(whole)
    (photos / "b_cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    (photos / "c_trailer.jpg").write_bytes(whole + np.random.default_rng(7).bytes(4000))
    result = invoke("predict", model_file, photos)
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("fer-bench: error:")]
    assert errors == [f"fer-bench: error: {photos / 'b_cut.jpg'}: truncated JPEG (it has no end-of-image marker)"]
    assert {Path(json.loads(line)["file"]).name for line in result.stdout.splitlines()} == \
        {"a_whole.jpg", "c_trailer.jpg"}
    assert "fer-bench: 1 input(s) failed" in result.stderr
    # the dataset loader decodes the same way: the cut file is refused, the one with a trailer is a face
    data = class_folders(tmp_path / "data")
    shutil.copy(photos / "c_trailer.jpg", data / "sad" / "trailer.jpg")
    assert sum(len(split) for split in load_dataset(data, cache_dir=False).splits) == 31
    shutil.copy(photos / "b_cut.jpg", data / "sad" / "cut.jpg")
    load_error(data, data / "sad" / "cut.jpg", "truncated JPEG")


def test_several_bad_images_are_listed_under_one_line(tmp_path):
    data = class_folders(tmp_path / "data")
    for name in ("a.png", "b.png"):
        (data / "sad" / name).write_bytes(b"")
    with pytest.raises(DatasetError) as info:
        load_dataset(data, cache_dir=False)
    first, *listed = str(info.value).splitlines()
    assert first == "2 image file(s) could not be decoded; remove or replace them and load again:"
    assert [line.strip() for line in listed] == [f"{data / 'sad' / name}: empty file (0 bytes)"
                                                 for name in ("a.png", "b.png")]


def test_an_unreadable_image_and_folder(tmp_path, restore_modes):
    data = class_folders(tmp_path / "data")
    image = data / "sad" / "002.png"
    image.chmod(0)
    if os.access(image, os.R_OK):
        pytest.skip("permissions do not bind for this user (root)")
    load_error(data, image, "cannot be read (Permission denied)")
    image.chmod(0o644)
    (data / "sad").chmod(0)
    load_error(data, data / "sad", "cannot be read (Permission denied)")


@pytest.mark.parametrize("kind", ["file out", "folder out", "loop", "broken", "class folder out"])
def test_links_are_never_followed(tmp_path, kind):
    data = class_folders(tmp_path / "data")
    outside = class_folders(tmp_path / "outside")
    link = {"file out": data / "happy" / "link.png", "folder out": data / "happy" / "more",
            "loop": data / "happy" / "loop", "broken": data / "happy" / "gone.png",
            "class folder out": data / "neutral"}[kind]
    target = {"file out": outside / "happy" / "000.png", "folder out": outside / "happy",
              "loop": data / "happy", "broken": tmp_path / "nothing.png",
              "class folder out": outside / "sad"}[kind]
    link.symlink_to(target)
    load_error(data, link, "a symbolic link", "follows no links")


def test_a_link_to_the_whole_dataset_is_fine(tmp_path):
    data = class_folders(tmp_path / "data")
    (tmp_path / "alias").symlink_to(data)
    dataset = load_dataset(tmp_path / "alias", cache_dir=False)
    assert sum(len(split) for split in dataset.splits) == 30


def test_a_file_name_that_is_not_utf8(tmp_path):
    data = class_folders(tmp_path / "data")
    try:
        os.rename(data / "sad" / "002.png", os.path.join(os.fsencode(data / "sad"), b"bad\xff.png"))
    except (OSError, UnicodeError):
        pytest.skip("the file system refuses names that are not UTF-8")
    message = load_error(data, "bad\\xff.png", "the name is not valid UTF-8")
    message.encode("utf-8")  # printable


def write_csv(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return path


def test_csv_with_a_byte_order_mark_loads_with_its_usage_split(tmp_path):
    path = write_csv(tmp_path / "bom.csv", b"\xef\xbb\xbf" + csv_text().encode())
    dataset = load_fer2013_csv(path, cache_dir=False)
    assert [len(split) for split in dataset.splits] == [7, 7, 7]
    assert "Usage column" in dataset.split_method


@pytest.mark.parametrize("content, fragment", [
    (bytes(np.random.default_rng(5).integers(0, 256, 3000, dtype=np.uint8)), "line 1: not UTF-8 text"),
    (csv_text().replace("PublicTest", "Publ\u00efcTest", 1).encode("latin-1"), "line 3: not UTF-8 text (byte 0xef"),
    (csv_text().encode("utf-16"), "UTF-16 text; save the CSV as UTF-8"),
    (csv_text().replace(" ", "\0 ", 1).encode(), "line 2: emotion must be an integer and pixels space-separated"),
    (("emotion,pixels,Usage\n0," + "1 " * 40000 + ",Training\n").encode(), "line 2: longer than 65,536 bytes"),
    (("emotion,pixels,Usage\n0," + "99999999999999999999 " * 2304 + ",Training\n").encode(),
     "line 2: emotion must be an integer"),
    (b"emotion;pixels;Usage\n", "wrong CSV header"),
])
def test_csv_that_cannot_be_read_names_the_line(tmp_path, content, fragment):
    path = write_csv(tmp_path / "bad.csv", content)
    message = load_error(path, path, fragment)
    result = invoke("data", "info", "--data", path, "--cache-dir", tmp_path / "cache")
    assert one_line_error(result) == f"fer-bench: error: {message}"


def test_an_unreadable_csv(tmp_path):
    path = write_csv(tmp_path / "fer2013.csv", csv_text())
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("permissions do not bind for this user (root)")
    load_error(path, "cannot be read (Permission denied)")


# --------------------------------------------------------------------------- nothing changes the protocol silently


@pytest.mark.parametrize("usage, fragment", [("", "line 7: Usage is blank"), ("Test", "line 7: Usage is 'Test'"),
                                             ("training", "line 7: Usage is 'training'")])
def test_a_blank_or_unknown_usage_is_an_error_naming_the_line(tmp_path, usage, fragment):
    path = write_csv(tmp_path / "fer2013.csv", csv_text(42, usage=lambda i: usage if i == 5 else USAGES[i % 3]))
    load_error(path, fragment, "every row needs Training, PublicTest, PrivateTest")
    result = invoke("data", "info", "--data", path, "--cache-dir", tmp_path / "cache")
    one_line_error(result, fragment)


def test_a_csv_without_the_usage_column_still_gets_a_seeded_split(tmp_path):
    text = "\n".join(line.rsplit(",", 1)[0] for line in csv_text(42).splitlines()) + "\n"
    dataset = load_fer2013_csv(write_csv(tmp_path / "plain.csv", text), cache_dir=False)
    assert dataset.split_method.startswith("CSV has no Usage column: stratified 80/10/10")


def test_a_split_too_small_fails_with_the_minimum(tmp_path):
    data = class_folders(tmp_path / "data", per_class=5)
    dataset = load_dataset(data, cache_dir=False)
    assert len(dataset.val) == 0
    with pytest.raises(DatasetError, match=rf"validation split has no faces; model selection and probability "
                                           rf"calibration need one at least.*from {MIN_FACES_A_CLASS} faces a "
                                           rf"class on \(the smallest class here has 5\)"):
        check_splits(dataset)
    check_splits(load_dataset(class_folders(tmp_path / "ten", per_class=MIN_FACES_A_CLASS), cache_dir=False))
    result = invoke("run", "--features", "hog", "--classifier", "svm", "--data", data, "--out", tmp_path / "out",
                    "--cache-dir", tmp_path / "cache", "--no-report")
    one_line_error(result, "validation split has no faces", "(faces: train 12, validation 0, test 3)")
    assert not (tmp_path / "out" / "records").exists()


def test_the_smallest_seeded_split_runs_and_calibrates_on_the_validation_faces(tmp_path):
    # 8 faces a class: one validation face a class, the least the check lets through
    data = class_folders(tmp_path / "data", per_class=8)
    result = invoke("run", "--features", "hog", "--classifier", "svm", "--preset", "quick", "--data", data,
                    "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache", "--no-report")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "records" / "hog__svm.json").read_text())
    assert record["status"] == "ok" and record["n_validation"] == 3


def test_grid_candidates_that_count_more_faces_than_there_are_are_left_out():
    from fer_bench.experiment.harness import candidate_grid, fit_grid_to_faces

    knn = candidate_grid("knn", {}, select=True)
    assert len(knn) == 6
    kept, note = fit_grid_to_faces("knn", knn, 12)
    assert [c["n_neighbors"] for c in kept] == [5, 5, 10, 10]
    assert note == "n_neighbors=20 left out of the grid: more than the 12 training faces (2 of 6 settings; 4 tried)"
    assert fit_grid_to_faces("knn", knn, 20) == (knn, None)  # scikit-learn allows n_neighbors == n_samples_fit
    with pytest.raises(ValueError, match=r"^knn: every candidate of the grid needs more than the 4 training faces "
                                         r"\(n_neighbors=5, n_neighbors=10, n_neighbors=20\); selection needs "
                                         r"at least 5 faces"):
        fit_grid_to_faces("knn", knn, 4)
    # without selection the default (or a fixed value) is checked too: kNN would refuse it
    with pytest.raises(ValueError, match=r"^knn: n_neighbors=10 needs at least 10 training faces and the training "
                                         r"split has 8; fix a smaller value \(--param n_neighbors=8\)"):
        fit_grid_to_faces("knn", candidate_grid("knn", {}, select=False), 8)
    assert fit_grid_to_faces("knn", [{"n_neighbors": 8}], 8) == ([{"n_neighbors": 8}], None)
    # the local SVM uses every face when k is larger: grid candidates above the faces would repeat one model
    local = candidate_grid("local_svm", {}, select=True)
    assert fit_grid_to_faces("local_svm", local, 600) == ([{"n_neighbors": 200}, {"n_neighbors": 500}],
                                                          "n_neighbors=1000 left out of the grid: more than the 600 "
                                                          "training faces (1 of 3 settings; 2 tried)")
    with pytest.raises(ValueError, match="selection needs at least 200 faces"):
        fit_grid_to_faces("local_svm", local, 150)
    assert fit_grid_to_faces("local_svm", [{}], 150) == ([{}], None)  # a single k is used with every face
    # grids that count no faces, and PCA components or kernel centres the grid does not vary, are kept
    for name in ("svm", "ls_svm", "dt", "rf", "linear_svm"):
        grid = candidate_grid(name, {}, select=True)
        assert fit_grid_to_faces(name, grid, 12) == (grid, None)


def test_knn_on_a_small_training_split_leaves_the_large_k_out_and_says_so(tmp_path):
    data = class_folders(tmp_path / "data", per_class=8)
    out = tmp_path / "out"
    result = invoke("run", "--features", "hog", "--classifier", "knn", "--select", "--preset", "quick", "--data",
                    data, "--out", out, "--cache-dir", tmp_path / "cache", "--no-report")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "records" / "hog__knn.json").read_text())
    assert record["status"] == "ok" and record["n_train"] == 18
    assert record["grid_note"] == ("n_neighbors=20 left out of the grid: more than the 18 training faces "
                                   "(2 of 6 settings; 4 tried)")
    assert sorted(entry["params"]["n_neighbors"] for entry in record["selection"]) == [5, 5, 10, 10]
    assert result.stderr.count("n_neighbors=20 left out of the grid") == 1
    # a fixed k above the training faces: the cell fails on one line stating the minimum, nothing is fitted
    result = invoke("run", "--features", "hog", "--classifier", "knn", "--param", "n_neighbors=30", "--preset",
                    "quick", "--data", data, "--out", tmp_path / "out2", "--cache-dir", tmp_path / "cache",
                    "--no-report")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ("fer-bench: hog__knn failed: ValueError: knn: n_neighbors=30 needs at least 30 training faces and the "
            "training split has 18; fix a smaller value (--param n_neighbors=18) or use more faces") in result.stderr


def test_a_truncated_video_says_how_many_frames_were_read(tmp_path, model_file):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(40):
        writer.write(rng.integers(0, 255, (64, 96, 3), np.uint8))
    writer.release()
    data = video.read_bytes()
    (tmp_path / "half.avi").write_bytes(data[: len(data) // 2])
    result = invoke("predict", model_file, tmp_path / "half.avi")
    assert result.exit_code == 0, result.output
    read = len(result.stdout.splitlines())
    assert 0 < read < 40
    assert (f"fer-bench: note: {tmp_path / 'half.avi'}: the video ended after {read} of the 40 frames its header "
            "announces") in result.stderr
    whole = invoke("predict", model_file, video)
    assert whole.exit_code == 0 and "the video ended" not in whole.stderr
    capped = invoke("predict", model_file, tmp_path / "half.avi", "--max-frames", 5)
    assert capped.exit_code == 0 and "the video ended" not in capped.stderr


def finished_run(run: Path) -> Path:
    """A run folder with one finished cell: its record and test predictions."""
    y_true = np.arange(70) % 7
    y_pred = np.where(np.arange(70) % 2 == 0, y_true, (y_true + 1) % 7)
    proba = np.eye(7)[y_pred] * 0.9 + 0.1 / 7
    save_predictions(run / "predictions" / "hog__svm.npz", y_true, y_pred, proba, _core.FER2013_CLASSES)
    record = {"schema_version": 1, "cell": "hog__svm", "family": "classic", "status": "ok", "error": None,
              "dataset": "fer2013", "dataset_key": "k", "features": "hog", "classifier": "svm",
              "split": {"train": "Training", "validation": "PublicTest", "test": "PrivateTest", "method": "canonical"},
              "accuracy": 0.5, "f1_macro": 0.5, "validation_accuracy": 0.5, "n_train": 100, "n_test": 70,
              "predictions_path": "predictions/hog__svm.npz"}
    _core.write_json_atomic(run / "records" / "hog__svm.json", record)
    return run


@pytest.mark.parametrize("content, fragment", [("{not json", "not valid JSON"),
                                               ("[1, 2]", "holds an array, not a record (a JSON object)"),
                                               (b"\xff\xfe{", "not valid JSON")])
def test_report_and_compare_say_which_record_is_unreadable_and_exit_1(tmp_path, content, fragment):
    run = finished_run(tmp_path / "run")
    broken = run / "records" / "broken.json"
    broken.write_bytes(content.encode() if isinstance(content, str) else content)
    for command in ("report", "compare"):
        result = invoke(command, run)
        line = one_line_error(result, "unreadable record broken.json", fragment, "left out of the figures")
        assert line.startswith("fer-bench: error: unreadable record")
    assert (run / "report.html").is_file()  # the report is still written, listing the broken record


def test_a_record_holding_a_json_list(tmp_path, work):
    path = tmp_path / "records" / "hog__svm.json"
    path.parent.mkdir()
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"hog__svm.json: holds an array, not a record"):
        read_record(path)
    assert finished_record(path, {}) is None  # the sweep runs the cell again and replaces the file
    (work / "run" / "records").mkdir(parents=True)
    (work / "run" / "records" / "a.json").write_text("[1]")
    (work / "run" / "records" / "b.json").write_text("{}")
    result = invoke("ensemble", "a,b", "--data", work / "data", "--out", work / "run", "--cache-dir",
                    work / "cache", "--no-report")
    one_line_error(result, "cell a:", "holds an array, not a record")


@pytest.mark.parametrize("content, fragment", [("[1, 2]", "holds an array, not a record (a JSON object)"),
                                               ("{not json", "not valid JSON"), ("", "not valid JSON")])
def test_run_keeps_an_unreadable_record_and_says_it_reruns_the_cell(work, content, fragment):
    out = work / "out"
    (out / "records").mkdir(parents=True)
    record = out / "records" / "hog__knn.json"
    record.write_text(content)
    (out / "records" / "hog__knn.json.bad").write_text("an earlier one")  # never overwritten
    result = invoke(*run_args(work, out))
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if "unreadable record" in line]
    assert len(notes) == 1 and notes[0].startswith(f"note: unreadable record {record}: {fragment}"), result.stderr
    assert notes[0].endswith("; kept as hog__knn.json.bad2, the cell runs again")
    assert (out / "records" / "hog__knn.json.bad2").read_text() == content
    assert (out / "records" / "hog__knn.json.bad").read_text() == "an earlier one"
    assert read_record(record)["status"] == "ok"
    rerun = invoke(*run_args(work, out))  # the new record is read: the cell is skipped, no note
    assert rerun.exit_code == 0 and "unreadable record" not in rerun.stderr and "skipped" in rerun.stderr


# --------------------------------------------------------------------------- fuzz: malformed files


def malformed_images() -> dict:
    """name -> bytes: truncated, wrong magic, huge headers, zero bytes, random bytes, text."""
    rng = np.random.default_rng(18)
    picture = rng.integers(0, 255, (48, 48), np.uint8)
    files = {}
    for extension in (".png", ".jpg", ".bmp", ".tif", ".webp", ".pgm", ".jp2"):
        try:
            whole = encoded(extension, picture)
        except (AssertionError, cv2.error):  # a codec this OpenCV lacks
            continue
        stem = extension[1:]
        files[f"{stem}_cut10{extension}"] = whole[: max(1, len(whole) // 10)]
        files[f"{stem}_cut50{extension}"] = whole[: len(whole) // 2]
        files[f"{stem}_cut95{extension}"] = whole[: len(whole) * 95 // 100]
        files[f"{stem}_zero{extension}"] = b""
        files[f"{stem}_random{extension}"] = rng.integers(0, 256, 2000, dtype=np.uint8).tobytes()
        flipped = bytearray(whole)
        flipped[len(whole) // 3: len(whole) // 3 + 40] = rng.integers(0, 256, 40, dtype=np.uint8).tobytes()
        files[f"{stem}_scrambled{extension}"] = bytes(flipped)
    files.update({
        "png_40000x40000.png": png_header(40000, 40000),
        "png_13000x12000.png": png_header(13000, 12000),
        "png_0x0.png": png_header(0, 0),
        "png_signature_only.png": b"\x89PNG\r\n\x1a\n",
        "jpeg_soi_only.jpg": b"\xff\xd8\xff",
        "jpeg_65000x65000.jpg": (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
                                 b"\xff\xc0\x00\x0b\x08\xfd\xe8\xfd\xe8\x01\x01\x11\x00\xff\xd9"),
        "bmp_40000x40000.bmp": (b"BM" + struct.pack("<IHHI", 54 + 16, 0, 0, 54)
                                + struct.pack("<IiiHHIIiiII", 40, 40000, 40000, 1, 24, 0, 16, 2835, 2835, 0, 0)
                                + bytes(16)),
        "pgm_40000x40000.pgm": b"P5\n40000 40000\n255\n" + bytes(100),
        "gif_named.png": b"GIF89a\x01\x00\x01\x00\x00\x00\x00;",
        "pdf_named.jpg": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n",
        "zip_named.png": b"PK\x03\x04" + bytes(60),
        "html_named.webp": b"<!doctype html><title>no</title>",
        "utf16_text.bmp": "not an image".encode("utf-16"),
    })
    return files


def test_fuzz_the_loader_with_malformed_images(tmp_path):
    """Each malformed file in a valid dataset: a DatasetError naming it, or (where it decodes) a loaded dataset."""
    data = class_folders(tmp_path / "data")
    refused = 0
    for name, content in malformed_images().items():
        path = data / "happy" / name
        path.write_bytes(content)
        try:
            load_dataset(data, cache_dir=False)
        except DatasetError as error:
            assert str(path) in str(error) and "\n" not in str(error), (name, str(error))
            refused += 1
        path.unlink()
    assert refused >= 40


def malformed_csvs() -> dict:
    good = csv_text(21)
    header, first, *rest = good.splitlines()
    return {
        "empty": b"",
        "bom_only": b"\xef\xbb\xbf",
        "header_only": (header + "\n").encode(),
        "bom_header_only": b"\xef\xbb\xbf" + (header + "\n").encode(),
        "random": bytes(np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8)),
        "zeros": bytes(5000),
        "utf16": good.encode("utf-16"),
        "utf16be_bom": b"\xfe\xff" + good.encode("utf-16-be"),
        "latin1_usage": good.replace("Training", "Tr\u00e4ining").encode("latin-1"),
        "cp1252_quote": good.replace("Training", "\u201cTraining\u201d", 1).encode("cp1252"),
        "nul": good.replace("\n", "\0\n", 2).encode(),
        "one_huge_line": b"emotion,pixels,Usage\n" + b"1" * 200_000,
        "no_newlines": b"x" * 300_000,
        "negative_pixel": good.replace(first, first.replace(",", ",-1 ", 1)).encode(),
        "float_pixels": good.replace(first, first.replace(" ", ".5 ", 1)).encode(),
        "emotion_word": good.replace(first, "happy" + first[1:]).encode(),
        "emotion_9": good.replace(first, "9" + first[1:]).encode(),
        "four_fields": good.replace(first, first + ",extra").encode(),
        "one_field": (header + "\n0\n").encode(),
        "quoted_newline": (header + '\n0,"1 2\n3",Training\n').encode(),
        "unterminated_quote": (header + '\n0,"1 2 3\n').encode(),
        "blank_usage": good.replace(",PublicTest", ",", 1).encode(),
        "lower_usage": good.replace("PrivateTest", "privatetest", 1).encode(),
        "semicolons": good.replace(",", ";").encode(),
        "too_few_pixels": good.replace(first, first.rsplit(" ", 1)[0] + ",Training").encode(),
    }


def test_fuzz_the_loader_with_malformed_csvs(tmp_path):
    for name, content in malformed_csvs().items():
        path = write_csv(tmp_path / f"{name}.csv", content)
        with pytest.raises(DatasetError) as info:
            load_dataset(path, cache_dir=False)
        message = str(info.value)
        assert message.startswith(str(path)) and "\n" not in message, (name, message)
    # what is right loads: CRLF line ends, a byte-order mark, the header alone without Usage
    good = csv_text(21)
    for content in (good.replace("\n", "\r\n").encode(), b"\xef\xbb\xbf" + good.encode()):
        assert len(load_dataset(write_csv(tmp_path / "good.csv", content), cache_dir=False).train) == 7


def test_fuzz_predict_with_malformed_files(tmp_path, model_file):
    """One predict over a folder of malformed photos and videos: each fails on its own line, the rest goes on."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    files = malformed_images()
    for name, content in files.items():
        (folder / name).write_bytes(content)
    videos = {"random.mp4": np.random.default_rng(3).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
              "zero.avi": b"", "text.mkv": b"not a video at all\n", "riff_only.avi": b"RIFF\x00\x00\x00\x00AVI "}
    for name, content in videos.items():
        (folder / name).write_bytes(content)
    cv2.imwrite(str(folder / "fine.png"), np.full((60, 80, 3), 128, np.uint8))
    before = snapshot(tmp_path)
    result = invoke("predict", model_file, folder, "--json", tmp_path / "records.jsonl")
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("fer-bench: error:")]
    named = {Path(line.split(": ")[2]).name for line in errors}
    records = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    read = {Path(record["file"]).name for record in records}
    assert "fine.png" in read and not named & read
    assert named | read == set(files) | set(videos) | {"fine.png"}  # every input either failed or gave records
    assert {name for name in named if "40000" in name or "65000" in name} == \
        {"png_40000x40000.png", "jpeg_65000x65000.jpg", "bmp_40000x40000.bmp", "pgm_40000x40000.pgm"}
    after = snapshot(tmp_path)
    assert {path for path in after if path not in before} == {str(tmp_path / "records.jsonl")}
    assert all(after[path] == state for path, state in before.items() if path != str(tmp_path))

"""fer_bench.models.load_model: one call for both model families, and clear errors."""

from __future__ import annotations

import pytest

from conftest import synthetic_faces
from fer_classic.model import ClassicModel, ModelFileError

keras = pytest.importorskip("keras")

from fer_bench.models import load_model, model_family  # noqa: E402
from deep_testing import tiny_model_file  # noqa: E402
from fer_deep import DeepModelFileError  # noqa: E402
from fer_deep.model import DeepModel  # noqa: E402


@pytest.fixture(scope="module")
def classic_file(tmp_path_factory):
    X, y = synthetic_faces(28, seed=1)
    model = ClassicModel("hog", "dt").fit(X, y)
    return model.save(tmp_path_factory.mktemp("classic") / "hog__dt.skops")


def test_dispatch_by_content(classic_file, tmp_path):
    assert model_family(classic_file) == "classic"
    assert model_family(tiny_model_file()) == "deep"
    assert isinstance(load_model(classic_file), ClassicModel)
    deep = load_model(tiny_model_file())
    assert isinstance(deep, DeepModel) and deep.family == "deep"
    # The name does not matter, only the content.
    renamed = tmp_path / "model.joblib"
    renamed.write_bytes(tiny_model_file().read_bytes())
    assert isinstance(load_model(renamed), DeepModel)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ModelFileError, match="missing.joblib: no such model file"):
        load_model(tmp_path / "missing.joblib")


def test_foreign_file_is_an_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a model")
    with pytest.raises(ModelFileError, match="notes.txt: not a fer-bench model file"):
        load_model(path)


def test_deep_file_of_another_version_is_an_error(tmp_path):
    import json
    import zipfile

    path = tmp_path / "old.zip"
    with zipfile.ZipFile(tiny_model_file()) as old, zipfile.ZipFile(path, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == "fer-bench-deep.json":
                data = json.dumps({**json.loads(data), "format_version": 0})
            new.writestr(item, data)
    with pytest.raises(DeepModelFileError,
                       match="old.zip: deep model format version 0, this fer-bench reads version 1"):
        load_model(path)

"""DeepModel: the shared model interface, save/load in one file, load errors, test-time augmentation."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

keras = pytest.importorskip("keras")

from conftest import CLASSES, synthetic_faces  # noqa: E402
from deep_testing import run_python, tiny_model_file  # noqa: E402
from fer_deep import DeepModelFileError, check_architecture_name  # noqa: E402
from fer_deep.model import DEEP_MODEL_FORMAT_VERSION, METADATA_MEMBER, DeepModel, read_deep_metadata  # noqa: E402


@pytest.fixture(scope="module")
def model():
    return DeepModel.load(tiny_model_file())


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(14, seed=5)[0]


def rewrite_metadata(source, target, **changes):
    """Copy a saved model, changing fields of its metadata."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for item in old.infolist():
            data = old.read(item.filename)
            if item.filename == METADATA_MEMBER:
                data = json.dumps({**json.loads(data), **changes})
            new.writestr(item, data)
    return target


def test_interface_shapes_and_label_names(model, faces):
    assert model.classes_ == CLASSES
    assert model.family == "deep"
    proba = model.predict_proba(faces)
    assert proba.shape == (14, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    labels = model.predict(faces)
    assert labels.shape == (14,)
    assert set(labels) <= set(CLASSES)
    np.testing.assert_array_equal(labels, np.asarray(CLASSES)[proba.argmax(axis=1)])
    assert model.predict_proba(faces[:0]).shape == (0, 7)


def test_loaded_model_keeps_its_description(model):
    assert model.arch == "tutorial" and model.epochs == 1 and model.epochs_ == 1 and model.batch_size == 14
    assert model.epochs_run_ == 1 and model.best_epoch_ == 1
    assert len(model.history_["val_accuracy"]) == 1
    assert model.metadata == {"note": "tiny test model"}
    info = read_deep_metadata(tiny_model_file())
    assert info["format_version"] == DEEP_MODEL_FORMAT_VERSION
    assert info["versions"]["keras"] == keras.__version__
    assert info["versions"]["keras_backend"] == keras.backend.backend()


def test_seed_the_tutorial_nets_former_name_fits_the_tutorial_net():
    X, y = synthetic_faces(14, seed=6)
    model = DeepModel("seed", epochs=1, batch_size=14, verbose=0).fit(X, y)
    assert model.get_params()["arch"] == "seed"  # stored as given, resolved in fit
    assert model.arch_ == "tutorial" and model.model_.name == "tutorial" and model.epochs_ == 1
    convs = [layer.filters for layer in model.model_.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [32, 64, 128, 128]


def test_a_model_saved_as_seed_loads_as_the_tutorial_net(model, faces, tmp_path):
    old = rewrite_metadata(tiny_model_file(), tmp_path / "old.zip", arch="seed")
    loaded = DeepModel.load(old)
    assert loaded.arch == loaded.arch_ == "tutorial"
    np.testing.assert_allclose(loaded.predict_proba(faces), model.predict_proba(faces), rtol=1e-6)


def test_fit_validates_faces_and_labels(model):
    X, y = synthetic_faces(14, seed=6)
    assert model.n_train_ == 28  # the tiny model was fitted on label names
    with pytest.raises(ValueError, match="unknown label 'bored'; classes are angry, disgust"):
        DeepModel("tutorial", epochs=1).fit(X[:2], ["happy", "bored"])
    with pytest.raises(ValueError, match="training needs faces of at least two classes"):
        DeepModel("tutorial", epochs=1).fit(X[:2], [3, 3])
    with pytest.raises(ValueError, match=r"faces must be a stack shaped \(n, 48, 48\), got shape \(48, 48\)"):
        DeepModel("tutorial", epochs=1).fit(X[0], [3])


class Trained(Exception):
    """Raised by a stand-in for fer_deep.training.train, carrying its arguments."""


@pytest.mark.parametrize("arch, given, expected",
                         [("tutorial", None, 100), ("seed", None, 100), ("mobilenet_v2", None, 40), ("vgg", 3, 3)])
def test_epochs_default_per_architecture(monkeypatch, arch, given, expected):
    import fer_deep.training

    def train(*args, **kwargs):
        raise Trained(args, kwargs)

    monkeypatch.setattr(fer_deep.training, "train", train)
    X, y = synthetic_faces(14, seed=6)
    with pytest.raises(Trained) as trained:
        DeepModel(arch, epochs=given).fit(X, y)
    assert trained.value.args[0][0] == check_architecture_name(arch) and trained.value.args[1]["epochs"] == expected


def test_an_unfitted_model_clones_and_validates_in_fit(faces):
    params = {"dropout": (0.1, 0.1, 0.2)}
    model = DeepModel("vgg", epochs=3, arch_params=params, random_state=4)
    assert model.get_params()["arch_params"] is params and not hasattr(model, "classes_")
    copy = clone(model)
    assert copy.get_params()["arch_params"] == params and copy.random_state == 4 and copy.epochs == 3
    assert copy.set_params(arch="mobilenet_v2").arch == "mobilenet_v2"
    X, y = synthetic_faces(14, seed=6)
    with pytest.raises(ValueError, match="unknown architecture 'alexnet'; choose from tutorial, vgg, mobilenet_v2"):
        DeepModel("alexnet").fit(X, y)  # validated in fit, not in __init__
    with pytest.raises(ValueError, match="unknown test-time augmentation 'twice'"):
        DeepModel("tutorial", tta="twice").fit(X, y)
    with pytest.raises(NotFittedError, match="this DeepModel is not fitted yet; call fit"):
        DeepModel("tutorial").predict(faces)


def test_wrong_face_size_is_an_error(model):
    with pytest.raises(ValueError, match=r"faces must be 48x48, got \(64, 64\)"):
        model.predict(np.zeros((1, 64, 64), np.uint8))


def test_test_time_augmentation_averages_a_face_and_its_mirror(model, faces, tmp_path):
    mirrored = faces[:, :, ::-1]
    plain = model.predict_proba(faces)
    np.testing.assert_allclose(
        DeepModel.load(rewrite_metadata(tiny_model_file(), tmp_path / "tta.zip", tta=True)).predict_proba(faces),
        (plain + model.predict_proba(mirrored)) / 2, rtol=1e-5, atol=1e-7,
    )


def test_save_load_round_trip_is_identical(model, faces, tmp_path):
    path = model.save(tmp_path / "sub" / "again.zip")
    assert sorted(zipfile.ZipFile(path).namelist()) == ["fer-bench-deep.json", "model.keras"]
    assert not list(path.parent.glob(".tmp-*"))
    loaded = DeepModel.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(faces), model.predict_proba(faces))


def test_reload_in_a_fresh_process_gives_identical_predictions(model, faces, tmp_path):
    np.save(tmp_path / "faces.npy", faces)
    code = (
        "import numpy as np\n"
        "from fer_deep.model import DeepModel\n"
        f"model = DeepModel.load({str(tiny_model_file())!r})\n"
        f"faces = np.load({str(tmp_path / 'faces.npy')!r})\n"
        f"np.save({str(tmp_path / 'proba.npy')!r}, model.predict_proba(faces))\n"
        "print(','.join(model.predict(faces)))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().split(",") == list(model.predict(faces))
    np.testing.assert_array_equal(np.load(tmp_path / "proba.npy"), model.predict_proba(faces))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DeepModelFileError, match="nope.zip: no such model file"):
        DeepModel.load(tmp_path / "nope.zip")


def test_foreign_file_is_an_error(tmp_path):
    path = tmp_path / "photo.zip"
    path.write_bytes(b"\x89PNG not a model at all")
    with pytest.raises(DeepModelFileError, match="photo.zip: not a fer-bench deep model file; train one with"):
        DeepModel.load(path)
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as bundle:
        bundle.writestr("readme.txt", "hello")
    with pytest.raises(DeepModelFileError, match="other.zip: not a fer-bench deep model file"):
        DeepModel.load(tmp_path / "other.zip")


def test_other_format_name_or_version_is_an_error(tmp_path):
    newer = rewrite_metadata(tiny_model_file(), tmp_path / "newer.zip", format_version=99)
    with pytest.raises(DeepModelFileError,
                       match="deep model format version 99, this fer-bench reads version 1; retrain the model"):
        DeepModel.load(newer)
    foreign = rewrite_metadata(tiny_model_file(), tmp_path / "foreign.zip", format="something-else")
    with pytest.raises(DeepModelFileError, match="foreign.zip: not a fer-bench deep model file"):
        DeepModel.load(foreign)


def test_incomplete_or_unknown_metadata_is_an_error(tmp_path):
    path = tmp_path / "incomplete.zip"
    with zipfile.ZipFile(tiny_model_file()) as old, zipfile.ZipFile(path, "w") as new:
        info = json.loads(old.read(METADATA_MEMBER))
        del info["classes"], info["tta"]
        new.writestr(METADATA_MEMBER, json.dumps(info))
        new.writestr("model.keras", old.read("model.keras"))
    with pytest.raises(DeepModelFileError, match="incomplete.zip: its metadata lacks classes, tta; the file is damaged"):
        DeepModel.load(path)
    future = rewrite_metadata(tiny_model_file(), tmp_path / "future.zip", arch="vit")
    with pytest.raises(DeepModelFileError, match="future.zip: unknown architecture 'vit'; choose from tutorial"):
        DeepModel.load(future)


def test_damaged_keras_model_is_an_error(tmp_path):
    path = tmp_path / "damaged.zip"
    with zipfile.ZipFile(tiny_model_file()) as old, zipfile.ZipFile(path, "w") as new:
        new.writestr(METADATA_MEMBER, old.read(METADATA_MEMBER))
        new.writestr("model.keras", b"garbage")
    with pytest.raises(DeepModelFileError, match="damaged.zip: its Keras model cannot be read"):
        DeepModel.load(path)
    without = tmp_path / "without.zip"
    with zipfile.ZipFile(tiny_model_file()) as old, zipfile.ZipFile(without, "w") as new:
        new.writestr(METADATA_MEMBER, old.read(METADATA_MEMBER))
    with pytest.raises(DeepModelFileError, match=r"without.zip: the model file lacks its Keras model \(model.keras\)"):
        DeepModel.load(without)

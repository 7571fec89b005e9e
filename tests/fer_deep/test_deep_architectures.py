"""Every registered architecture builds for 48x48 gray faces and returns 7 class probabilities."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_deep import ARCHITECTURE_ALIASES, ARCHITECTURE_NAMES, check_architecture_name  # noqa: E402
from fer_deep.architectures import ARCHITECTURES, make_model  # noqa: E402


@pytest.fixture(scope="module")
def built():
    return {name: make_model(name, (48, 48, 1), 7) for name in ARCHITECTURES}


def test_registry_names_match_the_keras_free_list():
    assert tuple(ARCHITECTURES) == tuple(ARCHITECTURE_NAMES)


def test_seed_is_an_alias_of_the_tutorial_net():
    assert check_architecture_name("seed") == "tutorial" and check_architecture_name("vgg_cpu") == "vgg_cpu"
    assert set(ARCHITECTURE_ALIASES.values()) <= set(ARCHITECTURE_NAMES)
    assert not set(ARCHITECTURE_ALIASES) & set(ARCHITECTURE_NAMES)
    assert make_model("seed").name == "tutorial"


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architecture_gives_probabilities(built, name):
    model = built[name]
    assert model.name == name
    assert tuple(model.input_shape) == (None, 48, 48, 1)
    assert tuple(model.output_shape) == (None, 7)
    faces = np.random.default_rng(0).integers(0, 256, size=(3, 48, 48, 1)).astype(np.float32)
    proba = np.asarray(model.predict_on_batch(faces))
    assert proba.shape == (3, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    # The probabilities are a softmax of the last layer's scores: its activation is softmax, so
    # scores taken before it and normalised by hand give the same rows.
    last = model.layers[-1]
    assert last.get_config().get("activation") == "softmax"
    import keras

    scores = np.asarray(keras.Model(model.inputs, last.input).predict_on_batch(faces)) @ np.asarray(
        last.kernel) + np.asarray(last.bias)
    expected = np.exp(scores - scores.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, expected / expected.sum(axis=1, keepdims=True), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_preprocessing_is_inside_the_model(built, name):
    # Raw pixels go in: the first layer after the input rescales or standardises them.
    kinds = {type(layer).__name__ for layer in built[name].layers[:3]}
    assert kinds & {"Rescaling", "Normalization"}


def test_tutorial_is_the_keras_tutorial_network(built):
    convs = [layer for layer in built["tutorial"].layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 128]
    dense = [layer for layer in built["tutorial"].layers if isinstance(layer, keras.layers.Dense)]
    assert [d.units for d in dense] == [1024, 7]
    rates = [layer.rate for layer in built["tutorial"].layers if isinstance(layer, keras.layers.Dropout)]
    assert rates == [0.25, 0.25, 0.5]


def test_vgg_has_four_batch_normalised_blocks(built):
    model = built["vgg"]
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert sorted({c.filters for c in convs}) == [64, 128, 256, 512]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == len(convs) + 2
    assert tuple(model.get_layer("block4_pool").output.shape) == (None, 3, 3, 512)


def test_mobilenet_accepts_gray_faces_through_its_stem(built):
    model = built["mobilenet_v2"]
    assert tuple(model.get_layer("gray_to_rgb").output.shape) == (None, 96, 96, 3)
    assert tuple(model.get_layer("out_relu").output.shape) == (None, 3, 3, 1280)


def test_other_class_counts_and_sizes():
    model = make_model("vgg", (48, 48, 1), 3, filters=(8, 8), convs_per_block=(1, 1), dense_units=(16,))
    assert tuple(model.output_shape) == (None, 3)


def test_unknown_architecture_is_an_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; choose from tutorial, vgg, mobilenet_v2"):
        make_model("resnet")


def test_vgg_block_lists_must_agree():
    with pytest.raises(ValueError, match=r"filters \(64, 128\) and convs_per_block \(2,\) differ in length"):
        make_model("vgg", filters=(64, 128), convs_per_block=(2,))


def test_mobilenet_never_downloads_weights():
    with pytest.raises(ValueError, match="would download at run time; give the path of a local weights file"):
        make_model("mobilenet_v2", weights="imagenet")


def test_mobilenet_loads_a_local_weights_file(tmp_path):
    # Convolution weights do not depend on the image size: a small body keeps the test fast.
    body = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    path = tmp_path / "body.weights.h5"
    body.save_weights(path)
    model = make_model("mobilenet_v2", size=32, alpha=0.35, weights=str(path))
    np.testing.assert_array_equal(model.get_layer("Conv1").get_weights()[0], body.get_layer("Conv1").get_weights()[0])

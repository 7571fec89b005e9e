"""Activation maps and Grad-CAM: block discovery, a hand-checked heat map, the PNG files."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import synthetic_faces  # noqa: E402
from deep_testing import tiny_model_file  # noqa: E402
from fer_deep.architectures import make_model  # noqa: E402
from fer_deep.explain import activation_maps, block_layer_names, explain_face, grad_cam  # noqa: E402
from fer_deep.model import DeepModel  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_blocks_of_each_architecture():
    assert block_layer_names(make_model("tutorial")) == ["conv1", "conv2", "conv3", "conv4"]
    assert block_layer_names(make_model("vgg", filters=(8, 8, 8, 8))) == [
        "block1_relu2", "block2_relu2", "block3_relu2", "block4_relu2"]


def test_model_without_convolutions_is_an_error():
    inputs = keras.Input((48, 48, 1))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)), name="flat")
    with pytest.raises(ValueError, match="model 'flat' has no convolutional feature maps to show"):
        block_layer_names(model)


def tiny_cam_model():
    """face -> 1x1 conv (weight 1) -> ReLU -> mean -> Dense: logit 0 = +mean, logit 1 = -mean."""
    inputs = keras.Input((48, 48, 1))
    conv = keras.layers.Conv2D(1, 1, use_bias=False, activation="relu", name="conv")
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    outputs = dense(keras.layers.GlobalAveragePooling2D()(conv(inputs)))
    model = keras.Model(inputs, outputs)
    conv.set_weights([np.ones((1, 1, 1, 1), np.float32)])
    dense.set_weights([np.array([[1.0, -1.0]], np.float32), np.zeros(2, np.float32)])
    return model


def test_grad_cam_by_hand():
    # The gradient of logit 0 with respect to the feature map is +1/(48*48) everywhere,
    # so its Grad-CAM is the feature map itself (the face), scaled to a maximum of 1;
    # logit 1's gradient is negative everywhere, so no location speaks for class 1.
    face = np.zeros((48, 48), np.uint8)
    face[10:20, 5:30] = 200
    face[30:40, 20:25] = 100
    np.testing.assert_allclose(grad_cam(tiny_cam_model(), face, 0), face / 200.0, atol=1e-5)
    np.testing.assert_array_equal(grad_cam(tiny_cam_model(), face, 1), np.zeros((48, 48)))


def test_activation_maps_of_each_block():
    model = DeepModel.load(tiny_model_file())
    face = synthetic_faces(1)[0][0]
    maps = activation_maps(model.model_, face)
    assert [name for name, _ in maps] == ["conv1", "conv2", "conv3", "conv4"]
    assert [a.shape for _, a in maps] == [(46, 46, 32), (44, 44, 64), (20, 20, 128), (8, 8, 128)]
    with pytest.raises(ValueError, match=r"a face must be one gray image shaped \(48, 48\), got shape \(2, 48, 48\)"):
        activation_maps(model.model_, np.zeros((2, 48, 48)))


def test_explain_face_writes_both_pictures(tmp_path):
    model = DeepModel.load(tiny_model_file())
    face = synthetic_faces(4, seed=9)[0][3]
    result = explain_face(model, face, tmp_path, stem="face3")
    assert result["blocks"] == ["conv1", "conv2", "conv3", "conv4"]
    assert result["predicted"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["target"] == result["predicted"]
    for key, name in (("activations_png", "face3-activations.png"), ("gradcam_png", "face3-gradcam.png")):
        assert result[key] == str(tmp_path / name)
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert explain_face(model, face, tmp_path, target="fear")["target"] == "fear"
    with pytest.raises(ValueError, match="unknown class 'bored'; classes are angry, disgust"):
        explain_face(model, face, tmp_path, target="bored")

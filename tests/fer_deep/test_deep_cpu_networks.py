"""The CPU-budget networks, their recipe (one-cycle schedule, label smoothing, erasing) and crop test-time augmentation."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import synthetic_faces  # noqa: E402

from fer_deep.architectures import make_model, multiply_adds  # noqa: E402
from fer_deep.model import DeepModel, check_tta, crop_shifts  # noqa: E402
from fer_deep.training import make_schedule, resolve_training_params  # noqa: E402

CPU_NETWORKS = ("vgg_cpu", "resnet_cpu")


def test_multiply_adds_counts_convolutions_and_dense_layers():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inputs)  # 4*4 positions x 2 filters x 9 weights = 288
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(7)(x)  # 32 inputs x 7 units = 224
    assert multiply_adds(keras.Model(inputs, outputs)) == 288 + 224


def test_listed_costs_are_those_of_the_built_networks():
    from fer_deep import ARCHITECTURE_COSTS, ARCHITECTURE_NAMES

    assert set(ARCHITECTURE_COSTS) == set(ARCHITECTURE_NAMES)
    for name, (parameters, macs) in ARCHITECTURE_COSTS.items():
        model = make_model(name, (48, 48, 1), 7)
        assert (model.count_params(), multiply_adds(model)) == (parameters, macs), name


def test_list_command_shows_each_cnn_with_its_cost():
    from click.testing import CliRunner

    from fer_bench.cli import cli

    done = CliRunner().invoke(cli, ["list"])
    assert done.exit_code == 0, done.output
    assert "vgg_cpu       1.18 M parameters, 0.082 G multiply-adds, 30 epochs" in done.stdout


@pytest.mark.parametrize("name", CPU_NETWORKS)
def test_cpu_network_fits_the_budget_and_sees_the_centre_crop(name):
    model = make_model(name, (48, 48, 1), 7)
    assert 0.05e9 < multiply_adds(model) < 0.3e9
    assert model.get_layer("centre_crop").height == 40
    # The window the network sees is the centre: changing the border changes nothing.
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, size=(1, 48, 48, 1)).astype(np.float32)
    bordered = face.copy()
    bordered[:, :4] = 0
    bordered[:, :, -4:] = 255
    np.testing.assert_allclose(model.predict_on_batch(face), model.predict_on_batch(bordered), rtol=1e-6)


@pytest.mark.parametrize("name", CPU_NETWORKS)
def test_cpu_network_trains_one_epoch_with_its_recipe(name):
    X, y = synthetic_faces(28, seed=3)
    X_val, y_val = synthetic_faces(14, seed=4)
    model = DeepModel(name, epochs=1, batch_size=14, verbose=0, tta="ten_crop")
    model.fit(X, y, validation=(X_val, y_val))
    params = model.training_params_
    assert (params["schedule"], params["optimizer"], params["label_smoothing"]) == ("one_cycle", "sgd", 0.1)
    assert params["erasing"] > 0
    assert model.epochs_run_ == 1 and len(model.history_["val_accuracy"]) == 1
    proba = model.predict_proba(X_val)
    assert proba.shape == (14, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_one_cycle_rises_to_the_peak_then_decays_to_a_thousandth():
    params = resolve_training_params("vgg_cpu", {"learning_rate": 0.05, "warmup": 0.2})
    schedule = make_schedule(params, steps_per_epoch=10, epochs=10)  # 100 steps, 20 rising
    rate = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 10, 20, 60, 100)]
    assert rate[0] == pytest.approx(0.002, rel=1e-4)
    assert rate[1] == pytest.approx(0.026, rel=1e-3)  # halfway up the linear rise
    assert rate[2] == pytest.approx(0.05, rel=1e-4)
    assert rate[2] > rate[3] > rate[4]
    assert rate[4] == pytest.approx(0.05e-3, rel=1e-3)


def test_crop_shifts_show_the_centre_and_corner_windows():
    X = np.arange(2 * 48 * 48).reshape(2, 48, 48)
    views = [view[:, 4:44, 4:44] for view in crop_shifts(X, 4)]  # what a 40x40 centre crop sees
    expected = [X[:, 4:44, 4:44], X[:, 0:40, 0:40], X[:, 0:40, 8:48], X[:, 8:48, 0:40], X[:, 8:48, 8:48]]
    for view, window in zip(views, expected):
        np.testing.assert_array_equal(view, window)


def test_ten_crop_needs_a_cropping_network_and_known_modes():
    with pytest.raises(ValueError, match="centre crop"):
        crop_shifts(np.zeros((1, 48, 48)), 0)
    with pytest.raises(ValueError, match="unknown test-time augmentation 'five'"):
        check_tta("five")
    assert check_tta(True) == "flip" and check_tta(False) is False


def test_ten_crop_answers_a_face_and_its_mirror_image_alike():
    X, y = synthetic_faces(21, seed=5)
    model = DeepModel("vgg_cpu", epochs=1, batch_size=21, verbose=0, tta="ten_crop",
                      arch_params={"filters": (8, 8, 8, 8)})
    model.fit(X, y)
    faces = synthetic_faces(4, seed=6)[0]
    mirrored = faces[:, :, ::-1]
    np.testing.assert_allclose(model.predict_proba(faces), model.predict_proba(mirrored), rtol=1e-5, atol=1e-7)
    # Without augmentation at test time the two generally differ: the check above is not vacuous.
    model.tta = False
    assert not np.allclose(model.predict_proba(faces), model.predict_proba(mirrored), atol=1e-7)

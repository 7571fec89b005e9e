"""A CNN exported to ONNX answers as the Keras model does, and runs without TensorFlow or Keras."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("tf2onnx")
pytest.importorskip("onnxruntime")

from click.testing import CliRunner  # noqa: E402
from conftest import synthetic_faces  # noqa: E402

from fer_bench.cli import cli  # noqa: E402
from fer_bench.models import load_model, model_family  # noqa: E402
from fer_deep import DeepModelFileError  # noqa: E402
from fer_deep.model import DeepModel  # noqa: E402
from fer_deep.onnx_model import OnnxModel, export_onnx  # noqa: E402


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    X, y = synthetic_faces(28, seed=7)
    model = DeepModel("vgg_cpu", epochs=1, batch_size=14, verbose=0, tta="ten_crop",
                      arch_params={"filters": (8, 8, 16, 16)}, metadata={"note": "tiny"})
    model.fit(X, y)
    return model.save(tmp_path_factory.mktemp("cnn") / "cnn.zip")


def test_onnx_export_gives_the_keras_answers(cnn_file, tmp_path):
    keras_model = DeepModel.load(cnn_file)
    path = export_onnx(keras_model, tmp_path / "cnn.onnx")
    onnx_model = load_model(path, threads=1)
    assert model_family(path) == "onnx" and isinstance(onnx_model, OnnxModel)
    assert onnx_model.classes_ == keras_model.classes_ and onnx_model.tta == "ten_crop"
    assert onnx_model.metadata == {"note": "tiny"}
    faces = synthetic_faces(40, seed=8)[0]
    expected = keras_model.predict_proba(faces)
    got = onnx_model.predict_proba(faces)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_array_equal(onnx_model.predict(faces), keras_model.predict(faces))
    np.testing.assert_array_equal(onnx_model.predict(faces), np.asarray(onnx_model.classes_)[got.argmax(axis=1)])


def test_export_command_and_its_errors(cnn_file, tmp_path):
    from fer_classic.model import ClassicModel

    done = CliRunner().invoke(cli, ["export", str(cnn_file), "--out", str(tmp_path / "m.onnx")])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == str(tmp_path / "m.onnx")
    X, y = synthetic_faces(21)
    classic = ClassicModel("hog", "knn").fit(X, y).save(tmp_path / "hog__knn.skops")
    refused = CliRunner().invoke(cli, ["export", str(classic)])
    assert refused.exit_code == 1
    assert refused.stderr == f"fer-bench: error: {classic}: not a Keras CNN file; export takes what `fer-bench " \
                             f"train cnn` saves\n"


def test_a_foreign_onnx_file_is_refused(tmp_path):
    path = tmp_path / "foreign.onnx"
    path.write_bytes(b"not a graph")
    with pytest.raises(DeepModelFileError, match="foreign.onnx: not a readable ONNX model"):
        OnnxModel(path)


def in_a_fresh_process(code: str) -> dict:
    """Run ``code`` (which fills a dict ``result``) in a new interpreter; ``result`` plus the TF/Keras modules loaded."""
    code = ("import sys, json, numpy as np\nfrom fer_bench.models import load_model\n" + code +
            "result['loaded'] = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
            "print(json.dumps(result))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_onnx_prediction_imports_neither_tensorflow_nor_keras(cnn_file, tmp_path):
    path = export_onnx(DeepModel.load(cnn_file), tmp_path / "cnn.onnx")
    result = in_a_fresh_process(
        f"model = load_model({str(path)!r})\n"
        "result = {'labels': list(model.predict(np.zeros((3, 48, 48), np.uint8)))}\n"
    )
    assert len(result["labels"]) == 3 and result["loaded"] == []


def test_fusion_with_an_onnx_member_saves_and_reloads_without_tensorflow(cnn_file, tmp_path):
    from fer_bench.ensemble import EnsembleModel
    from fer_classic.model import ClassicModel

    onnx_path = export_onnx(DeepModel.load(cnn_file), tmp_path / "cnn.onnx")
    onnx_model = load_model(onnx_path, threads=1)
    X, y = synthetic_faces(28, seed=7)
    classic = ClassicModel("hog", "knn").fit(X, y)
    fusion = EnsembleModel([onnx_model, classic], names=["cnn", "hog__knn"], weights=[0.7, 0.3])
    onnx_path.unlink()  # the member keeps its graph: the ensemble saves without the file it came from
    saved = fusion.save(tmp_path / "fusion.zip")
    faces = synthetic_faces(12, seed=9)[0]
    np.save(tmp_path / "faces.npy", faces)
    result = in_a_fresh_process(
        f"model = load_model({str(saved)!r}, threads=1)\n"
        f"proba = model.predict_proba(np.load({str(tmp_path / 'faces.npy')!r}))\n"
        "result = {'proba': proba.tolist(), 'families': [m.family for m in model.members]}\n"
    )
    assert result["loaded"] == [] and result["families"] == ["deep", "classic"]
    # ONNX Runtime's sums may be ordered differently from one session to the next: equal to rounding.
    np.testing.assert_allclose(np.asarray(result["proba"]), fusion.predict_proba(faces), rtol=1e-6, atol=1e-7)


def test_shipping_an_ensemble_exports_its_keras_members_to_onnx(cnn_file):
    from fer_bench.ensemble import EnsembleModel
    from fer_bench.shipping import runtime_of, with_onnx_members
    from fer_classic.model import ClassicModel

    X, y = synthetic_faces(28, seed=7)
    keras_fusion = EnsembleModel([DeepModel.load(cnn_file), ClassicModel("hog", "knn").fit(X, y)],
                                 names=["cnn", "hog__knn"], weights=[0.6, 0.4])
    shipped = with_onnx_members(keras_fusion)
    assert [type(member).__name__ for member in shipped.members] == ["OnnxModel", "ClassicModel"]
    assert shipped.names == keras_fusion.names and list(shipped.weights_) == list(keras_fusion.weights_)
    assert runtime_of(keras_fusion) == "keras + scikit-learn" and runtime_of(shipped) == "onnxruntime + scikit-learn"
    faces = synthetic_faces(20, seed=10)[0]
    np.testing.assert_allclose(shipped.predict_proba(faces), keras_fusion.predict_proba(faces), atol=1e-4)

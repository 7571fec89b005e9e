"""The models that ship with fer-bench: listed, loadable by name, scoring what their records say, usable offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from fer_bench.cli import cli
from fer_bench.models import load_model, shipped_models

SHIPPED = shipped_models()
MAX_TOTAL_BYTES = 100 * 1024**2


def test_models_command_lists_every_shipped_model():
    done = CliRunner().invoke(cli, ["models", "--json"])
    assert done.exit_code == 0, done.output
    listed = json.loads(done.stdout)
    assert [entry["name"] for entry in listed] == [record["name"] for record in SHIPPED]
    assert listed, "fer-bench ships at least one trained model"
    assert listed[0]["default"] is True and sum(entry["default"] for entry in listed) == 1
    for entry in listed:
        assert {"name", "family", "path", "accuracy", "command", "commit", "dataset_key"} <= set(entry)
        assert os.path.getsize(entry["path"]) == entry["bytes"]
    assert sum(entry["bytes"] for entry in listed) <= MAX_TOTAL_BYTES
    table = CliRunner().invoke(cli, ["models"])
    assert table.exit_code == 0 and all(entry["name"] in table.stdout for entry in listed)


def test_a_shipped_ensemble_records_the_seed_of_each_member():
    by_name = {record["name"]: record for record in SHIPPED}
    ensembles = [record for record in SHIPPED if record.get("members")]
    assert ensembles
    for record in ensembles:
        seeds = [by_name[member.removeprefix("shipped:")]["seed"] for member in record["members"]]
        assert record["member_seeds"] == seeds
        # One seed only when every member was trained from it.
        assert record["seed"] == (seeds[0] if len(set(seeds)) == 1 else None)


@pytest.mark.parametrize("record", SHIPPED, ids=[record["name"] for record in SHIPPED])
def test_shipped_model_scores_its_record_with_the_labels_predict_gives(record, fer2013):
    model = load_model(record["name"])
    assert model.classes_ == tuple(fer2013.classes)
    test = fer2013.test
    assert test.name == record["test"] and fer2013.content_key == record["dataset_key"]
    proba = model.predict_proba(test.X)
    labels = model.predict(test.X)
    names = np.asarray(model.classes_)
    np.testing.assert_array_equal(labels, names[proba.argmax(axis=1)])
    accuracy = float(np.mean(labels == names[test.y]))
    assert accuracy == pytest.approx(record["accuracy"], abs=0.0005)


PREDICT_WITHOUT_TENSORFLOW = """
import json, sys
from fer_bench.cli import main
sys.argv = ["fer-bench", "predict", *sys.argv[1:]]
try:
    main()
except SystemExit as end:
    status = end.code
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf2onnx"))
print(json.dumps({"status": status, "loaded": loaded}), file=sys.stderr)
"""


def predict_in_a_fresh_process(tmp_path, *args) -> tuple:
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    done = subprocess.run([sys.executable, "-c", PREDICT_WITHOUT_TENSORFLOW, str(photo), *args],
                          capture_output=True, text=True, timeout=300)
    end = json.loads(done.stderr.strip().splitlines()[-1])
    records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    return end, records


def test_predict_without_a_model_uses_the_default_and_never_imports_tensorflow(tmp_path):
    end, records = predict_in_a_fresh_process(tmp_path)
    assert end == {"status": 0, "loaded": []}
    # The astronaut's face, where it is in the photo, with the label its probabilities rank first.
    faces = [r for r in records if abs(r["box"][0] - 176) < 30 and abs(r["box"][1] - 77) < 30]
    assert len(faces) == 1
    assert faces[0]["label"] == max(faces[0]["probabilities"], key=faces[0]["probabilities"].get)


@pytest.mark.parametrize("record", [r for r in SHIPPED if r["file"].endswith(".onnx")],
                         ids=[r["name"] for r in SHIPPED if r["file"].endswith(".onnx")])
def test_the_shipped_cnn_predicts_through_onnx_runtime_without_tensorflow(record, tmp_path):
    end, records = predict_in_a_fresh_process(tmp_path, "--model", record["name"])
    assert end == {"status": 0, "loaded": []}
    assert records and all(r["label"] == max(r["probabilities"], key=r["probabilities"].get) for r in records)


def test_an_unknown_model_name_lists_the_shipped_ones(tmp_path):
    from skimage import data

    photo = tmp_path / "astronaut.png"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    done = CliRunner().invoke(cli, ["predict", "--model", "no-such-model", str(photo)])
    assert done.exit_code == 1
    assert done.stderr.startswith("fer-bench: error: no-such-model: no such model file, nor a shipped model's "
                                  "name (shipped: ")
    assert all(record["name"] in done.stderr for record in SHIPPED)

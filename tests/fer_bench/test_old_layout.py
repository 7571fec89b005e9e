"""Model files saved by the earlier layout (``benchmarks/``, ``fer_classic.deploy``) still load and predict the same.

The fixtures were written by commit f59d123, before the estimators moved to
``fer_classic.estimators``: their pickles name ``fer_classic.deploy.FixedSizeLSSVM``
and ``fer_classic.deploy.VectorizedSVC``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from fer_bench.models import load_model
from fer_classic.estimators import FixedSizeLSSVM, VectorizedSVC
from fer_classic.model import ClassicModel, ModelFileError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


@pytest.mark.parametrize("name, estimator_type", [("old_layout_ls_svm", FixedSizeLSSVM),
                                                  ("old_layout_svm_deploy", VectorizedSVC)])
def test_a_model_saved_by_the_old_layout_loads_and_predicts_as_before(name, estimator_type, tmp_path):
    faces = np.load(FIXTURES / "old_layout_ls_svm_expected.npz")["X"]
    expected = np.load(FIXTURES / f"{name}_expected.npz")
    with pytest.raises(ModelFileError, match="pickle .joblib. model file; loading one runs any code"):
        load_model(FIXTURES / f"{name}.joblib")
    with pytest.warns(UserWarning, match="because it is trusted"):
        model = load_model(FIXTURES / f"{name}.joblib", trust=True)
    assert isinstance(model, ClassicModel)
    estimator = model.estimator_.steps[-1][1] if hasattr(model.estimator_, "steps") else model.estimator_
    assert type(estimator) is estimator_type
    np.testing.assert_array_equal(model.predict(faces), expected["labels"])
    np.testing.assert_allclose(model.predict_proba(faces), expected["proba"], rtol=1e-6, atol=1e-9)
    # The old module name is an alias only while a file loads; it does not stay importable.
    assert "fer_classic.deploy" not in sys.modules
    # Saved again, it is a skops file (loads untrusted) that names the new module.
    again = ClassicModel.load(model.save(tmp_path / "again.skops"))
    np.testing.assert_array_equal(again.predict(faces), expected["labels"])
    np.testing.assert_allclose(again.predict_proba(faces), expected["proba"], rtol=1e-6, atol=1e-9)
    import zipfile

    with zipfile.ZipFile(tmp_path / "again.skops") as bundle:
        schema = bundle.read("schema.json").decode()
    assert '"__module__": "fer_classic.deploy"' not in schema
    assert '"__module__": "fer_classic.estimators"' in schema
    assert _pickles_a_class_of(FIXTURES / f"{name}.joblib", "fer_classic.deploy")


def _pickles_a_class_of(path, module: str) -> bool:
    """Whether a (zlib-compressed joblib) pickle names a class of ``module``.

    Protocol 4 names a class with two short strings, module then class
    (each followed by a memo mark), and STACK_GLOBAL.
    """
    import re
    import zlib

    name = module.encode()
    pattern = re.escape(b"\x8c" + bytes([len(name)]) + name + b"\x94\x8c") + rb".[A-Za-z_]\w*\x94\x93"
    return re.search(pattern, zlib.decompress(path.read_bytes()), re.DOTALL) is not None

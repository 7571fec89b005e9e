"""Choose sift_bovw's defaults on a subset: Training faces for fitting, PublicTest for scoring.

Never reads PrivateTest.  One factor at a time from a base setting; the
descriptors are computed once per grid step and shared by the settings::

    nice -n 15 python benchmarks/bench_sift_bovw.py --data ../shared/data/fer2013 --train 5000

Prints one line per setting: PublicTest accuracy and seconds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from fer_bench._core import stratified_subset
from fer_bench.data import default_cache_dir, load_dataset
from fer_classic.estimators import LocalSVM
from fer_classic.sift import SiftBovwFeatures

BASE = {"step": 4, "bin_sizes": (4, 6), "vocabulary_size": 200, "levels": (1, 2, 4), "encoding": "presence",
        "norm": "l1", "feature_map": "sqrt"}
FEATURE_SETTINGS = [
    {},
    {"vocabulary_size": 100},
    {"vocabulary_size": 400},
    {"encoding": "counts"},
    {"levels": (1, 2)},
    {"levels": (1,)},
    {"feature_map": "none"},
    {"feature_map": "chi2"},
    {"bin_sizes": (4,)},
    {"step": 6},
]


def rbf_svm(scale=True):
    return Pipeline([("scale", StandardScaler() if scale else "passthrough"), ("reduce", PCA(200, random_state=0)),
                     ("svc", SVC(C=10.0, gamma="scale", break_ties=True, cache_size=1000))])


def descriptors_of(X, params):
    return SiftBovwFeatures(**params)._descriptors(X)


def features_from(descriptors, X_train, params):
    """sift_bovw vectors of the training and validation faces from their descriptors, as fit + transform give."""
    D_train, D_val = descriptors
    transformer = SiftBovwFeatures(**params)
    transformer._validate_params_values()
    start = time.perf_counter()
    transformer._learn(D_train[transformer._draw(len(D_train), D_train.shape[1])], X_train)
    fit_seconds = time.perf_counter() - start
    encode = lambda D: np.concatenate([transformer._encode(D[i : i + 512]) for i in range(0, len(D), 512)])
    return transformer, encode(D_train), encode(D_val), fit_seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--train", type=int, default=5000)
    parser.add_argument("--classifiers", action="store_true",
                        help="Also try the base features with other classifiers (unscaled SVM, local SVMs).")
    args = parser.parse_args()
    dataset = load_dataset(args.data, cache_dir=default_cache_dir())
    index = stratified_subset(dataset.train.y, args.train, seed=0)
    X_train, y_train = dataset.train.X[index], dataset.train.y[index]
    X_val, y_val = dataset.val.X, dataset.val.y
    print(f"{len(y_train)} Training faces, {len(y_val)} {dataset.val.name} faces", flush=True)

    descriptors = {}
    results = {}
    for change in FEATURE_SETTINGS:
        params = {**BASE, **change}
        grid = (params["step"], BASE["bin_sizes"])
        if grid not in descriptors:
            start = time.perf_counter()
            descriptors[grid] = (descriptors_of(X_train, params | {"bin_sizes": BASE["bin_sizes"]}),
                                 descriptors_of(X_val, params | {"bin_sizes": BASE["bin_sizes"]}))
            print(f"descriptors step {grid[0]}: {(time.perf_counter() - start) * 1000 / (len(X_train) + len(X_val)):.1f} "
                  f"ms a face", flush=True)
        D_train, D_val = descriptors[grid]
        if params["bin_sizes"] != BASE["bin_sizes"]:  # a prefix: the keypoints are size-major
            per_size = D_train.shape[1] // len(BASE["bin_sizes"])
            keep = [BASE["bin_sizes"].index(b) for b in params["bin_sizes"]]
            columns = np.concatenate([np.arange(per_size) + per_size * k for k in keep])
            D_train, D_val = D_train[:, columns], D_val[:, columns]
        transformer, F_train, F_val, fit_seconds = features_from((D_train, D_val), X_train, params)
        if not change:  # the shortcut gives what the transformer itself gives
            np.testing.assert_array_equal(F_val[:20], transformer.transform(X_val[:20]))
        start = time.perf_counter()
        accuracy = rbf_svm().fit(F_train, y_train).score(F_val, y_val)
        print(f"{str(change or 'base'):<34} {F_train.shape[1]:>6} values  svm {accuracy:.4f}  "
              f"(vocabulary {fit_seconds:.0f} s, svm {time.perf_counter() - start:.0f} s)", flush=True)
        results[str(change)] = (F_train, F_val) if not change else None
    if args.classifiers:
        F_train, F_val = results[str({})]
        candidates = {"svm, not standardised": rbf_svm(scale=False)}
        for k in (200, 500):
            candidates[f"local_svm rbf k={k}"] = Pipeline([
                ("scale", StandardScaler()), ("reduce", PCA(200, random_state=0)), ("local", LocalSVM(k))])
        for name, model in candidates.items():
            start = time.perf_counter()
            accuracy = model.fit(F_train, y_train).score(F_val, y_val)
            print(f"{name:<40} {accuracy:.4f}  ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

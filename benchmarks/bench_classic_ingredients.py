"""What each ingredient of the best classical cells is worth, on PublicTest, with all Training faces.

Never reads PrivateTest.  The features come from the run's feature cache
(``~/.cache/fer-bench/features``; extracted once by ``fer-bench run`` or
here), so each setting costs one classifier fit and one PublicTest scoring::

    nice -n 5 python benchmarks/bench_classic_ingredients.py --data ../shared/data/fer2013 \\
        --only sift_alone,sift_counts,sift_levels_1,sift_levels_12,global,global_sift,local,global_sift_pca400

Prints one line per setting: PublicTest accuracy, fit and scoring seconds.
Settings run in the order given, each fitted on the 28,709 Training faces
without mirrored copies (the mirrored faces' gain is a separate pair of
``fer-bench run`` cells, ``--flip`` and not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fer_bench.data import default_cache_dir, load_dataset
from fer_classic.classifiers import make_local_svm, make_svm
from fer_classic.features import make_features, transform_faces

SIFT_VARIANTS = {
    "sift_alone": {},
    "sift_counts": {"encoding": "counts"},
    "sift_levels_1": {"levels": (1,)},
    "sift_levels_12": {"levels": (1, 2)},
}
SETTINGS = {
    **{name: ("sift_bovw", params, "svm", {}) for name, params in SIFT_VARIANTS.items()},
    "global": ("hog+lbp+landmarks", {}, "svm", {}),
    "global_sift": ("sift_bovw+hog+lbp+landmarks", {}, "svm", {}),
    "global_sift_pca400": ("sift_bovw+hog+lbp+landmarks", {}, "svm", {"pca_components": 400}),
    "local": ("hog+lbp+landmarks", {}, "local_svm", {"n_neighbors": 200}),
    "local_sift": ("sift_bovw+hog+lbp+landmarks", {}, "local_svm", {"n_neighbors": 200}),
}
CLASSIFIERS = {"svm": lambda **p: make_svm(C=10.0, **p), "local_svm": lambda **p: make_local_svm(**p)}


def features(spec, sift_params, X_train, faces, cache):
    """The feature matrices of ``X_train`` and each of ``faces`` (extractor fitted on ``X_train``)."""
    extractor = make_features(spec, {"sift_bovw": sift_params} if "sift_bovw" in spec else None, n_jobs=-1)
    extractor.fit(X_train)
    return [transform_faces(extractor, X, memory=cache, n_jobs=-1) for X in (X_train, *faces)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--only", default=",".join(SETTINGS), help="Settings, comma-separated, in order.")
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    dataset = load_dataset(args.data)
    cache = default_cache_dir() / "features"
    train, val = dataset.train, dataset.val
    print(f"{len(train)} {train.name} faces, scored on {len(val)} {val.name} faces", flush=True)
    for name in names:
        spec, sift_params, classifier, params = SETTINGS[name]
        start = time.perf_counter()
        F_train, F_val = features(spec, sift_params, train.X, [val.X], cache)
        extract = time.perf_counter() - start
        model = CLASSIFIERS[classifier](**params)
        start = time.perf_counter()
        model.fit(F_train, train.y)
        fit = time.perf_counter() - start
        start = time.perf_counter()
        accuracy = float(np.mean(model.predict(F_val) == val.y))
        score = time.perf_counter() - start
        print(f"{name:20s} {spec}+{sift_params or ''} {classifier} {params or ''}: {val.name} {accuracy:.2%} "
              f"(features {F_train.shape[1]}, extract {extract:.0f} s, fit {fit:.0f} s, score {score:.0f} s)",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

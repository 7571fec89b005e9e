"""Feature extraction and classical prediction speed.

Prints faces per second for each feature (one process, and every core), and
for each saved classical model given, milliseconds per face with features
included: one face at a time on one thread, and batched on one thread.

    python -m benchmarks.bench_features --data ../shared/data/fer2013 [--models runs/full/models/*.joblib]

Figures from one run are comparable with each other; compare runs as ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def faces_per_second(transformer, X, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``transform(X)``, as faces per second."""
    transformer.fit(X[:1])
    transformer.transform(X[:8])  # warm-up: lazy model loads
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        transformer.transform(X)
        best = min(best, time.perf_counter() - start)
    return len(X) / best


def main(argv=None):
    from joblib import cpu_count
    from threadpoolctl import threadpool_limits

    from fer_bench.data import load_dataset
    from fer_bench.experiment.harness import time_prediction
    from fer_classic.features import make_features
    from fer_classic.model import ClassicModel

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset path (default: FER_BENCH_DATA or data/fer2013)")
    parser.add_argument("--faces", type=int, default=3000,
                        help="faces to extract per timing (below 2,000 extraction stays in one process)")
    parser.add_argument("--models", nargs="*", default=[], help="saved classical models to time")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data)
    X = dataset.test.X[: args.faces]
    # Every parameter that differs between rows is spelled out, so a changed
    # default cannot make two rows time the same thing.
    specs = [
        ("hog (skimage)", "hog", {"hog": {"engine": "skimage"}}),
        ("hog (opencv)", "hog", {"hog": {"engine": "opencv"}}),
        ("lbp P=8 R=1", "lbp", {"lbp": {"radius": 1}}),
        ("lbp P=8 R=1,2,3", "lbp", {"lbp": {"radius": (1, 2, 3)}}),
        ("landmarks", "landmarks", {}),
    ]
    print(f"feature extraction on {len(X):,} FER-2013 faces, {cpu_count()} cores")
    print(f"{'feature':<18} {'dims':>6} {'faces/s 1 proc':>15} {'faces/s all':>12} {'ms/face 1 proc':>15}")
    for label, spec, params in specs:
        with threadpool_limits(1):
            single = faces_per_second(make_features(spec, params, n_jobs=None), X)
        parallel = faces_per_second(make_features(spec, params, n_jobs=-1), X, repeats=1)
        dims = make_features(spec, params).fit(X[:1]).transform(X[:1]).shape[1]
        print(f"{label:<18} {dims:>6} {single:>15,.0f} {parallel:>12,.0f} {1000 / single:>15.3f}")

    if args.models:
        print()
        print("prediction, features included, one thread")
        print(f"{'model':<48} {'ms/face single':>15} {'ms/face batched':>16}")
        for path in args.models:
            model = ClassicModel.load(path)
            timing = time_prediction(model, dataset.test.X, batch=1000, singles=200)
            print(f"{path:<48} {timing['predict_ms_single']:>15.3f} {timing['predict_ms_per_face']:>16.3f}")


if __name__ == "__main__":
    main()

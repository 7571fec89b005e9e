"""The overhead of ``fer-bench run --dask local:N`` against a plain run of the same cells, in one run.

Runs one sweep twice on this machine, in fresh run folders: in this process (the plain run), then as
tasks of a ``LocalCluster`` of N worker processes with one thread each (``--dask local:N``, the cluster's
start and close included).  Each run starts with an empty feature cache and the same decoded faces
(linked from ``--cache-dir``), so both extract, select, fit and score everything.  Prints both wall
times, their ratio, the cluster's own start and close, and what the scaling model of the README predicts
for N workers from the plain run's cells: ``max(sum of cells / N, longest cell)``.

    python -m benchmarks.bench_dask --data ../shared/data/fer2013 [--preset quick] [--features lbp,hog]
                                    [--classifiers knn,dt,rf,linear_svm] [--workers 2] [--json out.json]

The default grid is a part of the quick preset's classical cells, so both runs end in minutes on
2 cores; ``--features lbp,hog,landmarks,hog+lbp+landmarks --classifiers all`` is the whole classical
grid.  Figures from one run are comparable with each other; compare runs as ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def fresh_cache(source: Path, folder: Path) -> Path:
    """A cache folder holding ``source``'s decoded faces (linked) and no features."""
    folder.mkdir(parents=True)
    for path in source.glob("arrays-*.npz"):
        (folder / path.name).symlink_to(path.resolve())
    return folder


def timed_sweep(*, dask, data, cache, out_dir, preset, features, classifiers) -> dict:
    from fer_bench.experiment.distributed import dask_executor
    from fer_bench.experiment.sweep import run_sweep

    start = time.perf_counter()
    records = run_sweep(data_path=data, features=features, classifiers=classifiers, out_dir=out_dir,
                        cache_dir=cache, preset=preset, execute=dask_executor(dask), log=lambda message: None)
    seconds = time.perf_counter() - start
    failed = [r["cell"] for r in records if r.get("status") != "ok"]
    if failed:
        raise SystemExit(f"bench_dask: cells failed: {', '.join(failed)}")
    return {"seconds": seconds, "cells": {r["cell"]: r["wall_seconds"] for r in records},
            "accuracy": {r["cell"]: r["accuracy"] for r in records}}


def main(argv=None):
    from fer_bench.data import default_cache_dir, load_dataset
    from fer_bench.experiment.distributed import dask_client, scaled_seconds
    from fer_classic.classifiers import CLASSIFIERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("FER_BENCH_DATA", "data/fer2013"), help="dataset path")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the decoded faces are cached")
    parser.add_argument("--preset", default="quick", help="sweep preset (default: quick)")
    parser.add_argument("--features", default="lbp,hog", help="feature sets, comma-separated")
    parser.add_argument("--classifiers", default="knn,dt,rf,linear_svm", help="classifiers, or all")
    parser.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    features = args.features.split(",")
    classifiers = list(CLASSIFIERS) if args.classifiers == "all" else args.classifiers.split(",")
    source_cache = Path(args.cache_dir or os.environ.get("FER_BENCH_CACHE") or default_cache_dir())
    load_dataset(args.data, cache_dir=source_cache)  # the decoded faces, cached before either run is timed
    dask = f"local:{args.workers}"

    with tempfile.TemporaryDirectory(prefix="bench-dask-") as scratch:
        scratch = Path(scratch)
        runs = {}
        for name, mode in (("plain", None), ("dask", dask)):
            cache = fresh_cache(source_cache, scratch / f"cache-{name}")
            runs[name] = timed_sweep(dask=mode, data=args.data, cache=cache, out_dir=scratch / f"run-{name}",
                                     preset=args.preset, features=features, classifiers=classifiers)
        start = time.perf_counter()
        with dask_client(dask, log=lambda message: None):
            pass
        cluster_seconds = time.perf_counter() - start

    plain, distributed = runs["plain"], runs["dask"]
    cells = list(plain["cells"].values())
    model = scaled_seconds(cells, args.workers)
    result = {
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average_1min": os.getloadavg()[0]},
        "preset": args.preset, "features": features, "classifiers": classifiers, "workers": args.workers,
        "cells": len(cells), "plain_seconds": plain["seconds"], "dask_seconds": distributed["seconds"],
        "ratio": distributed["seconds"] / plain["seconds"], "cluster_start_close_seconds": cluster_seconds,
        "plain_cells_sum_seconds": sum(cells), "longest_cell_seconds": max(cells),
        "scaling_model_seconds": model,
        "same_accuracies": plain["accuracy"] == distributed["accuracy"],
        "plain_cell_seconds": plain["cells"], "dask_cell_seconds": distributed["cells"],
    }
    print(f"{len(cells)} cells ({','.join(features)} x {','.join(classifiers)}), preset {args.preset}, "
          f"{os.cpu_count()} cores, load average {result['machine']['load_average_1min']:.1f}")
    print(f"  plain run                    {plain['seconds']:8.1f} s")
    print(f"  --dask {dask:<21} {distributed['seconds']:8.1f} s   ratio {result['ratio']:.2f}")
    print(f"  local cluster start + close  {cluster_seconds:8.1f} s")
    print(f"  scaling model, {args.workers} workers     {model:8.1f} s   (cells {sum(cells):.1f} s in all, "
          f"longest {max(cells):.1f} s)")
    print(f"  same accuracies in every cell: {result['same_accuracies']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()

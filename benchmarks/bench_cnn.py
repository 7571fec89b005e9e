"""Benchmark the CNN architectures on this machine: training throughput and prediction latency.

For each architecture, batch size and XLA setting it builds the trainer
exactly as :func:`fer_deep.training.train` does (augmentation layers, the
architecture's optimiser, schedule and loss), runs a few warm-up batches
(tracing, compilation, allocation), then times:

- training: images per second over ``--batches`` batches of ``--batch-size``,
  and the seconds one FER-2013 epoch would take (28,709 training faces plus
  a pass over the 3,589 validation faces), extrapolated from that rate;
- prediction: milliseconds per face for one face at a time (median) and in
  batches of 256, through ``DeepModel``'s own predict path.

Random pixels stand in for faces: the cost of a convolution does not depend
on what the pixels show.  Run::

    python benchmarks/bench_cnn.py [--archs vgg_cpu,resnet_cpu] [--batch-sizes 64,128,256] [--jit off,on]
                                   [--batches 5] [--arch-param filters=(48,96,192,384)] [--json out.json]

Each row also gives the forward multiply-adds of one face
(:func:`fer_deep.architectures.multiply_adds`) and the backend (set
``KERAS_BACKEND`` to compare TensorFlow, JAX or PyTorch where installed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

from fer_bench._core import FER2013_CLASSES

FER2013_TRAIN = 28_709
FER2013_VALIDATION = 3_589


def vector_units() -> str:
    """The widest vector and matrix units the CPU offers (Linux: /proc/cpuinfo), e.g. ``avx2`` or
    ``avx512f+amx_tile``: convolution throughput depends on them more than on the clock, so the figures
    of two machines compare only when these agree.  Empty where unknown."""
    try:
        with open("/proc/cpuinfo") as stream:
            flags = next((line.split(":", 1)[1].split() for line in stream if line.startswith("flags")), [])
    except OSError:
        return ""
    return "+".join(unit for unit in ("avx2", "avx512f", "avx512_bf16", "amx_tile") if unit in flags)


def bench_architecture(arch: str, *, batch_size: int = 64, batches: int = 5, warmup: int = 2,
                       singles: int = 20, seed: int = 0, jit_compile="auto", arch_params=None) -> dict:
    """Time training and prediction of one architecture; returns plain figures."""
    import keras

    from fer_deep.architectures import multiply_adds
    from fer_deep.model import DeepModel
    from fer_deep.training import time_training

    rng = np.random.default_rng(seed)
    timed = time_training(arch, batch_size=batch_size, batches=batches, warmup=warmup, seed=seed,
                          jit_compile=jit_compile, arch_params=arch_params,
                          steps_per_epoch=math.ceil(FER2013_TRAIN / batch_size))
    net, images_per_second, warm_seconds = timed["net"], timed["faces_per_second"], timed["warmup_seconds"]

    model = DeepModel(arch, arch_params=arch_params)
    model.model_ = net
    model.input_shape_ = (48, 48, 1)
    model.classes_ = FER2013_CLASSES
    faces = rng.integers(0, 256, size=(256, 48, 48)).astype(np.uint8)
    model.predict(faces[:2])
    model.predict(faces)  # warm-up of the full-batch shape
    start = time.perf_counter()
    model.predict(faces)
    batched_ms = (time.perf_counter() - start) * 1000 / len(faces)
    times = []
    for face in faces[:singles]:
        start = time.perf_counter()
        model.predict(face[None])
        times.append((time.perf_counter() - start) * 1000)
    epoch_seconds = FER2013_TRAIN / images_per_second + FER2013_VALIDATION * batched_ms / 1000
    return {
        "arch": arch,
        "arch_params": dict(arch_params or {}),
        "parameters": int(net.count_params()),
        "multiply_adds": multiply_adds(net),
        "backend": keras.backend.backend(),
        "jit_compile": jit_compile,
        "batch_size": batch_size,
        "train_images_per_second": images_per_second,
        "seconds_per_epoch": epoch_seconds,
        "predict_ms_single": float(np.median(times)),
        "predict_ms_per_face_batched": batched_ms,
        "build_and_warmup_seconds": warm_seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archs", default=None, help="comma-separated architectures [default: all registered]")
    parser.add_argument("--batch-sizes", default="64", help="comma-separated batch sizes [default: 64]")
    parser.add_argument("--jit", default="auto", help="comma-separated XLA settings: off, on, auto [default: auto]")
    parser.add_argument("--batches", type=int, default=5, help="timed training batches")
    parser.add_argument("--warmup", type=int, default=2, help="untimed training batches first")
    parser.add_argument("--arch-param", action="append", default=[], metavar="KEY=VALUE",
                        help="architecture parameter for every network benchmarked (repeatable), as "
                             "`fer-bench train cnn --arch-param` takes it, e.g. filters=(48,96,192,384)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    import keras

    from fer_deep import ARCHITECTURE_NAMES

    archs = [a.strip() for a in (args.archs or ",".join(ARCHITECTURE_NAMES)).split(",") if a.strip()]
    unknown = [a for a in archs if a not in ARCHITECTURE_NAMES]
    if unknown:
        print(f"bench_cnn: unknown architecture(s) {', '.join(unknown)}; "
              f"choose from {', '.join(ARCHITECTURE_NAMES)}", file=sys.stderr)
        return 1
    machine = {"platform": platform.platform(), "processor": platform.machine(), "cores": os.cpu_count(),
               "vector_units": vector_units(), "keras": keras.__version__, "backend": keras.backend.backend()}
    print(f"# {machine['platform']}, {machine['cores']} cores ({machine['vector_units'] or 'vector units unknown'}), "
          f"Keras {machine['keras']} ({machine['backend']})", file=sys.stderr)
    jit_values = {"off": False, "on": True, "auto": "auto"}
    jits = [j.strip() for j in args.jit.split(",") if j.strip()]
    if any(j not in jit_values for j in jits):
        print(f"bench_cnn: --jit takes off, on or auto, got {args.jit}", file=sys.stderr)
        return 1
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    from fer_bench.cli import parse_params

    arch_params = parse_params(args.arch_param)
    if arch_params:
        print(f"# architecture parameters: {arch_params}", file=sys.stderr)
    header = (f"{'arch':<14} {'params':>10} {'GMAC':>6} {'batch':>5} {'xla':>5} {'train img/s':>12} "
              f"{'s/epoch':>9} {'ms/face 1':>10} {'ms/face batch':>14}")
    print(header)
    print("-" * len(header))
    results = []
    for arch in archs:
        for batch_size in batch_sizes:
            for jit in jits:
                r = bench_architecture(arch, batch_size=batch_size, batches=args.batches, warmup=args.warmup,
                                       jit_compile=jit_values[jit], arch_params=arch_params)
                results.append(r)
                print(f"{arch:<14} {r['parameters']:>10,} {r['multiply_adds'] / 1e9:>6.3f} {batch_size:>5} "
                      f"{jit:>5} {r['train_images_per_second']:>12.1f} {r['seconds_per_epoch']:>9.0f} "
                      f"{r['predict_ms_single']:>10.2f} {r['predict_ms_per_face_batched']:>14.3f}", flush=True)
    if args.json_path:
        with open(args.json_path, "w") as stream:
            json.dump({"machine": machine, "results": results}, stream, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Run a grid of cells on one dataset and split, resumably.

A sweep runs classical cells (a feature set x a classifier, through
:func:`fer_bench.experiment.harness.run_classic_cell`) and CNN cells (an architecture,
through :func:`fer_bench.experiment.deep_cell.run_deep_cell`) on one dataset and one split
into one output folder.

Each finished cell's record and model are written atomically, so an
interrupted sweep loses at most the cell in progress.  A rerun skips every
cell whose record finished with the same settings and reruns failed ones.  A
cell that raises becomes a record with ``status="error"``; the sweep goes on.

After a cell returns, the sweep adds what the cell itself does not know: the
settings it was run with (``config``), the preset and subset, the peak memory
while it ran, the git commit, and it stores the paths of its files relative to
the output folder, so a moved run folder still renders its report.

Each cell carries its work as a :class:`CellTask` (a function and plain
arguments), so ``run_sweep(execute=...)`` can hand the planned cells to another
runner: :mod:`fer_bench.experiment.distributed` runs them as tasks of a Dask
cluster and writes the same run folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from fer_classic.features import FEATURE_CODE_VERSION, resolved_feature_params

from .._core import stratified_subset, write_json_atomic
from .deep_cell import run_folder_arch
from .harness import candidate_grid, cell_id, error_record, read_record, run_classic_cell
from .progress import PeakMemory, Progress

FEATURE_SETS = ("lbp", "hog", "landmarks", "hog+lbp+landmarks")
"""The feature sets ``fer-bench run --all`` crosses with every classifier."""



@dataclass(frozen=True)
class Preset:
    """How much of the data and of the model selection a sweep uses.

    Attributes
    ----------
    name : str
        ``quick`` or ``full``.
    description : str
        One line for the help text and the report.
    train_size, validation_size, test_size : int or None
        Stratified, seeded subsample of that split (None: all of it).  Every
        cell of a sweep sees the same subsample, so the models stay comparable.
    select : bool
        Choose classical hyperparameters on the validation split from the
        registry grid (False: registry defaults, one fit per cell).
    cnn_epochs : int or None
        Epochs of every CNN (None: per architecture, see :func:`cnn_epochs`).
    batch_size : int
        CNN batch size.
    accelerator_networks : bool
        Whether ``--all`` trains the networks sized for an accelerator too
        (:data:`fer_bench.experiment.plan.ACCELERATOR_NETWORKS`).
    """

    name: str
    description: str
    train_size: int | None = None
    validation_size: int | None = None
    test_size: int | None = None
    select: bool = True
    cnn_epochs: int | None = None
    batch_size: int = 64
    accelerator_networks: bool = False


PRESETS = {
    # Sized so that `run --all --preset quick` (about 30 classical cells, 3 CNNs) ends within
    # 10 minutes on a shared 2-core machine: VGG's epoch and the kernel classifiers
    # grow with the training faces, CNN prediction time with the test faces.
    "quick": Preset(
        "quick",
        "stratified subsamples of 1,500 training, 500 validation and 1,000 test faces, registry defaults "
        "(no grid), CNNs 1 epoch: a smoke run of every cell in minutes",
        train_size=1500, validation_size=500, test_size=1000, select=False, cnn_epochs=1,
    ),
    "full": Preset(
        "full",
        "all data, hyperparameters selected on the validation split, the CPU networks with their epochs, "
        "their ensemble and the classical + deep fusion (about 9-10 hours on 2 cores)",
    ),
    "accelerator": Preset(
        "accelerator",
        "the full preset plus the networks sized for an accelerator (vgg, mobilenet_v2: about a day each "
        "on 2 cores)",
        accelerator_networks=True,
    ),
}
"""Preset name -> :class:`Preset`."""

PATH_SUFFIXES = ("_path", "_png", "_dir")
"""Record keys ending in these hold file paths; the sweep stores them relative to the run folder."""


# --------------------------------------------------------------------------- registries


def deep_architectures() -> tuple:
    """Names of the registered CNN architectures, read without importing Keras (empty if none)."""
    try:
        import fer_deep
    except ImportError:
        return ()
    for attribute in ("ARCHITECTURE_NAMES", "ARCHITECTURES"):
        names = getattr(fer_deep, attribute, None)
        if names:
            return tuple(names)
    return ()


def preset_networks(preset) -> list:
    """The CNNs ``run --all`` trains under ``preset``: the CPU networks, and with an accelerator preset all."""
    from .plan import cpu_networks

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    names = list(deep_architectures())
    return names if preset.accelerator_networks else cpu_networks(names)


def cnn_epochs(arch: str, preset: Preset, override: int | None = None) -> int:
    """Epochs for ``arch``: the override, else the preset's, else the architecture's default."""
    if override is not None:
        return int(override)
    if preset.cnn_epochs is not None:
        return preset.cnn_epochs
    from fer_deep import DEFAULT_EPOCHS, check_architecture_name

    return int(DEFAULT_EPOCHS[check_architecture_name(arch)])


def run_deep_cell(dataset, arch, out_dir, **settings) -> dict:
    """Train and score one CNN cell (see :func:`fer_bench.experiment.deep_cell.run_deep_cell`).

    Imported here, at call time, so a classical-only sweep never loads Keras.
    """
    import inspect

    from .deep_cell import run_deep_cell as run

    if "verbose" in inspect.signature(run).parameters and "verbose" not in settings:
        # Keras' progress bar redraws itself in a terminal; elsewhere (a log
        # file, a pipe) one line per epoch reads better.
        settings["verbose"] = 1 if sys.stderr.isatty() else 2
    return run(dataset, arch, out_dir, **settings)


# --------------------------------------------------------------------------- subsets


def subsample_dataset(dataset, preset: Preset, seed: int = 0):
    """The dataset with each split cut to the preset's size (stratified, seeded).

    Returns the dataset unchanged when the preset keeps every split whole.  The
    subsample gets its own ``content_key`` (the original key, sizes and seed
    hashed), so records and caches never mistake it for the full data.
    """
    sizes = {"train": preset.train_size, "val": preset.validation_size, "test": preset.test_size}
    splits = {}
    for attribute, size in sizes.items():
        split = getattr(dataset, attribute)
        index = stratified_subset(split.y, size, seed)
        splits[attribute] = split if len(index) == len(split) else split.subset(index)
    if all(splits[a] is getattr(dataset, a) for a in sizes):
        return dataset
    key = hashlib.sha1(json.dumps([dataset.content_key, sizes, seed]).encode()).hexdigest()[:20]
    counts = ", ".join(f"{s.name} {len(s):,}" for s in splits.values())
    note = f"preset {preset.name}: stratified subsample (seed {seed}) of {counts} faces"
    return replace(dataset, **splits, content_key=key, notes=tuple(dataset.notes) + (note,))


# --------------------------------------------------------------------------- records


def git_commit() -> str | None:
    """The source's git commit (with ``-dirty`` if it has local changes), or None outside a checkout."""
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=root,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def relative_paths(record: dict, out_dir) -> dict:
    """The record with every file path inside ``out_dir`` rewritten relative to it.

    Paths outside ``out_dir`` stay as they are (absolute).
    """
    root = Path(out_dir).resolve()
    for key, value in list(record.items()):
        if isinstance(value, (str, os.PathLike)) and key.endswith(PATH_SUFFIXES):
            path = Path(value)
            absolute = path if path.is_absolute() else Path.cwd() / path
            try:
                record[key] = absolute.resolve().relative_to(root).as_posix()
            except ValueError:
                record[key] = str(value)
    return record


def cell_config(dataset, features, classifier, *, feature_params, classifier_params, select, flip, seed,
                tta="none") -> dict:
    """The settings that decide a classical cell's result; a finished record with equal settings is reused.

    ``tta`` is among them only when it is not ``"none"``, so records written before it existed are reused.
    """
    config = {
        "dataset_key": dataset.content_key,
        "features": features,
        "feature_params": feature_params,
        "classifier": classifier,
        "fixed_params": classifier_params,
        "select": select,
        "flip": flip,
        "seed": seed,
    }
    if tta != "none":
        config["tta"] = tta
    return config


def resolved_classic_settings(spec: str, classifier: str, feature_params: dict) -> dict:
    """The defaults a classical cell's result also depends on: every feature parameter, the classifier's
    defaults and its grid.

    Part of the cell's settings, so a record made before a default changed in
    the code is not reused.  Parameters that do not resolve are kept as the
    error text: the cell itself then fails with the full message.
    """
    from fer_classic.classifiers import CLASSIFIERS
    from fer_classic.features import parse_feature_spec

    try:
        features = {name: json.loads(resolved_feature_params(name, feature_params.get(name, {})))
                    for name in parse_feature_spec(spec)}
    except (TypeError, ValueError) as error:
        features = f"unresolved: {error}"
    entry = CLASSIFIERS.get(classifier)
    return {
        "features": features,
        "feature_code_version": FEATURE_CODE_VERSION,
        "classifier_defaults": entry.defaults() if entry else None,
        "grid": entry.grid if entry else None,
    }


def deep_cell_config(dataset, arch, *, epochs, batch_size, seed, train_params) -> dict:
    """The settings that decide a CNN cell's result."""
    return {
        "dataset_key": dataset.content_key,
        "arch": arch,
        "epochs": epochs,
        "batch_size": batch_size,
        "seed": seed,
        "train_params": train_params,
    }


def finished_record(path: Path, config: dict) -> dict | None:
    """The record at ``path`` if it finished with ``config``; else None."""
    if not path.is_file():
        return None
    try:
        record = read_record(path)
    except ValueError:  # damaged: the cell runs again (run_sweep has set the file aside, see set_aside_unreadable)
        return None
    if record.get("status") != "ok" or record.get("config") != json.loads(json.dumps(config)):
        return None
    return record


def set_aside_unreadable(path: Path, log) -> Path | None:
    """Move a record file that cannot be read (not JSON, a JSON list ...) to ``NAME.json.bad`` and say so.

    Its cell then runs again and writes a new record; the old file is kept
    for a look (``.bad``, ``.bad2`` ... never overwritten) and no longer
    counts as a record (reports read ``records/*.json``).  Returns where it
    went, or None when the file is readable or missing.
    """
    if not path.is_file():
        return None
    try:
        read_record(path)
        return None
    except ValueError as error:
        reason = str(error)
    number = 1
    while (bad := path.with_name(f"{path.name}.bad{number if number > 1 else ''}")).exists():
        number += 1
    os.replace(path, bad)
    log(f"note: unreadable record {reason}; kept as {bad.name}, the cell runs again")
    return bad


@dataclass(frozen=True)
class CellTask:
    """How to run one cell, apart from its data, folder, cache and log: plain data and a function, so it pickles.

    ``task(dataset, out_dir, cache, log)`` calls
    ``function(dataset, *args, out_dir, **kwargs, [cache=cache,] log=log)``; the sweep runs it here, and
    :mod:`fer_bench.experiment.distributed` sends it to a Dask worker.  The function is the one named when
    the cell was planned.
    """

    function: Callable
    args: tuple
    kwargs: dict
    uses_cache: bool = False

    def __call__(self, dataset, out_dir, cache, log):
        extra = {"cache": cache} if self.uses_cache else {}
        return self.function(dataset, *self.args, out_dir, **self.kwargs, **extra, log=log)


@dataclass
class Cell:
    """One unit of a sweep: a name, its settings, and how to run it."""

    name: str
    family: str
    config: dict
    run: Callable  # run(log) -> record
    describe: dict  # fields of an error record
    estimate: float = 0.0  # seconds, see fer_bench.experiment.plan
    task: CellTask | None = None  # what a Dask worker runs; None: the cell reads the run folder, so runs here


# --------------------------------------------------------------------------- the sweep


def plan_cells(dataset, *, features, classifiers, cnns, out_dir, preset: Preset, seed, classifier_params,
               feature_params, select, flip, epochs, batch_size, train_params, cache, ensembles=False,
               tta="none") -> list:
    """The sweep's cells in order: classical (features x classifiers), then CNNs, then (with ``ensembles``)
    the ensemble of the CNNs and the fusion of the best classical cell with them."""
    from .plan import classic_cell_seconds, cnn_cell_seconds

    cells = []
    for spec in features:
        for classifier in classifiers:
            name = cell_id(spec, classifier, flip, tta)
            relevant = {k: v for k, v in feature_params.items() if k in spec.split("+")}
            config = cell_config(dataset, spec, classifier, feature_params=relevant,
                                 classifier_params=classifier_params, select=select, flip=flip, seed=seed, tta=tta)
            config["resolved"] = resolved_classic_settings(spec, classifier, relevant)
            config = json.loads(json.dumps(config, default=str))  # as it reads back from the record

            task = CellTask(run_classic_cell, (spec, classifier),
                            {"feature_params": relevant, "classifier_params": classifier_params, "select": select,
                             "flip": flip, "tta": tta, "seed": seed}, uses_cache=True)

            def run(cell_log, task=task):
                return task(dataset, out_dir, cache, cell_log)

            cells.append(Cell(name, "classic", config, run,
                              {"dataset": dataset.name, "features": spec, "classifier": classifier},
                              classic_cell_seconds(spec, classifier, len(dataset.train), flip,
                                                   len(candidate_grid(classifier, classifier_params or {}, select)),
                                                   tta=tta),
                              task))
    for arch in cnns:
        arch = run_folder_arch(arch, out_dir)  # cnn-seed in a folder written before the tutorial net's rename
        arch_epochs = cnn_epochs(arch, preset, epochs)
        arch_batch = batch_size or preset.batch_size
        config = deep_cell_config(dataset, arch, epochs=arch_epochs, batch_size=arch_batch, seed=seed,
                                  train_params=train_params)

        task = CellTask(run_deep_cell, (arch,), {"epochs": arch_epochs, "batch_size": arch_batch, "seed": seed,
                                                 "resume": True, "train_subset": None, **train_params})

        def run(cell_log, task=task):
            return task(dataset, out_dir, None, cell_log)

        cells.append(Cell(f"cnn-{arch}", "deep", config, run, {"dataset": dataset.name, "arch": arch},
                          cnn_cell_seconds(arch, arch_epochs, len(dataset.train), len(dataset.val)), task))
    if ensembles:
        cells.extend(ensemble_cells(dataset, cells, out_dir))
    return cells


def ensemble_cells(dataset, cells, out_dir) -> list:
    """``ensemble-cnn`` (every finished CNN cell of the plan) and ``fusion`` (the best classical cell by
    validation accuracy with those CNNs); each is planned when the plan has what it needs, and picks its
    members among the finished cells when it runs."""
    from .ensemble_cell import member_records, run_ensemble_cell
    from .plan import ENSEMBLE_SECONDS

    cnn_names = [cell.name for cell in cells if cell.family == "deep"]
    classic_names = [cell.name for cell in cells if cell.family == "classic"]

    def finished(names):
        return [name for name in names if finished_record(Path(out_dir) / "records" / f"{name}.json",
                                                          next(c.config for c in cells if c.name == name))]

    def run_cnn_ensemble(cell_log):
        return run_ensemble_cell(dataset, "ensemble-cnn", finished(cnn_names), out_dir, log=cell_log)

    def run_fusion(cell_log):
        done = finished(classic_names)
        if not done:
            raise ValueError("no classical cell finished, so there is nothing to fuse")
        best = max(member_records(out_dir, done), key=lambda record: record["validation_accuracy"] or 0.0)
        return run_ensemble_cell(dataset, "fusion", [best["cell"], *finished(cnn_names)], out_dir, log=cell_log)

    planned = []
    if len(cnn_names) >= 2:
        planned.append(Cell("ensemble-cnn", "ensemble", {"dataset_key": dataset.content_key, "ensemble": cnn_names},
                            run_cnn_ensemble, {"dataset": dataset.name}, ENSEMBLE_SECONDS))
    if cnn_names and classic_names:
        planned.append(Cell("fusion", "ensemble", {"dataset_key": dataset.content_key,
                                                   "fusion": [classic_names, cnn_names]},
                            run_fusion, {"dataset": dataset.name}, ENSEMBLE_SECONDS))
    return planned


def run_sweep(
    *,
    data_path=None,
    features=(),
    classifiers=(),
    cnns=(),
    out_dir,
    cache_dir=None,
    preset="full",
    seed=0,
    classifier_params=None,
    feature_params=None,
    select=None,
    flip=False,
    tta="none",
    epochs=None,
    batch_size=None,
    train_params=None,
    force=False,
    log=print,
    dataset=None,
    ensembles=False,
    execute=None,
) -> list:
    """Run every (features, classifier) cell and every CNN on one dataset and split; return the records in order.

    Parameters
    ----------
    data_path : path, optional
        Dataset to load (ignored when ``dataset`` is given).
    features, classifiers : sequence of str
        Feature specs and classifier names; every pair is one classical cell.
    cnns : sequence of str
        CNN architecture names; each is one deep cell named ``cnn-<arch>``.
    out_dir : path
        Run folder: ``records/``, ``models/``, ``predictions/`` go under it.
    cache_dir : path, optional
        Where decoded arrays and features are cached.
    preset : str or Preset
        ``quick`` or ``full`` (see :data:`PRESETS`).
    seed : int
        Seed of the split, the subsample and the models.
    classifier_params, feature_params : dict, optional
        Fixed classifier parameters; ``{feature: {param: value}}``.
    select : bool, optional
        Hyperparameter selection on the validation split (default: the preset's).
    flip : bool
        Add mirrored training faces (classical cells).
    tta : {"none", "flip"}
        Classical cells' test-time augmentation: ``"flip"`` averages each validation and test face with its
        mirror image, and the saved models keep doing so.
    epochs, batch_size : int, optional
        Override the preset's CNN epochs and batch size.
    train_params : dict, optional
        Extra keyword arguments for the CNN training.
    force : bool
        Rerun cells that already have a finished record.
    log : callable
        Receives progress lines.
    dataset : Dataset, optional
        An already loaded dataset.
    ensembles : bool
        Add the ensemble of the CNN cells and the classical + deep fusion (``run --all``).
    execute : callable, optional
        Runs the planned cells in place of this process's loop and returns their records:
        ``execute(cells, dataset=, data_path=, cache_dir=, preset=, seed=, out_dir=, force=, commit=, log=)``.
        :class:`fer_bench.experiment.distributed.DaskExecutor` runs them on a Dask cluster into the same
        run folder.  None: every cell runs here, one after the other.

    Returns
    -------
    list of dict
        One record per cell; failed cells have ``status="error"``.
    """
    from ..data import check_splits, load_dataset

    preset = PRESETS[preset] if isinstance(preset, str) else preset
    select = preset.select if select is None else select
    classifier_params = dict(classifier_params or {})
    feature_params = dict(feature_params or {})
    train_params = dict(train_params or {})
    if dataset is None:
        dataset = load_dataset(data_path, cache_dir=cache_dir, seed=seed)
    dataset = subsample_dataset(dataset, preset, seed)
    check_splits(dataset)  # a split too small to select, calibrate or score on fails here, not in every cell
    log(f"{dataset.name}: {dataset.split_method}")
    for note in dataset.notes:
        log(f"  {note}")
    log(f"  fit on {dataset.train.name} ({len(dataset.train):,}), select on {dataset.val.name} "
        f"({len(dataset.val):,}), score on {dataset.test.name} ({len(dataset.test):,})")
    out_dir = Path(out_dir)
    cache = Path(cache_dir) / "features" if cache_dir else None
    cells = plan_cells(dataset, features=list(features), classifiers=list(classifiers), cnns=list(cnns),
                       out_dir=out_dir, preset=preset, seed=seed, classifier_params=classifier_params,
                       feature_params=feature_params, select=select, flip=flip, epochs=epochs,
                       batch_size=batch_size, train_params=train_params, cache=cache, ensembles=ensembles,
                       tta=tta)
    from .plan import TimeLeft, clock, feature_seconds

    for cell in cells:  # before anything reads them: a damaged record is never replaced silently
        set_aside_unreadable(out_dir / "records" / f"{cell.name}.json", log)
    todo = [cell for cell in cells
            if force or finished_record(out_dir / "records" / f"{cell.name}.json", cell.config) is None]
    if execute is None:
        cells, todo = calibrated(cells, todo, log)
    classic_todo = [cell.name for cell in todo if cell.family == "classic"]
    extraction = feature_seconds([c.describe["features"] for c in todo if c.family == "classic"],
                                 len(dataset.train) * (2 if flip else 1)
                                 + (len(dataset.val) + len(dataset.test)) * (1 if tta == "none" else 2)
                                 ) if classic_todo else 0.0
    counts = {family: sum(cell.family == family for cell in todo) for family in ("classic", "deep", "ensemble")}
    log(f"plan: {len(cells)} cells, {len(todo)} to run ({counts['classic']} classical, {counts['deep']} CNN, "
        f"{counts['ensemble']} ensemble); estimated "
        f"{clock(sum(cell.estimate for cell in todo) + extraction)} with nothing else running")
    for cell in todo:
        log(f"  {cell.name:<34} about {clock(cell.estimate)}")
    commit = git_commit()
    if execute is not None:
        return execute(cells, dataset=dataset, data_path=data_path, cache_dir=cache_dir, preset=preset, seed=seed,
                       out_dir=out_dir, force=force, commit=commit, log=log)
    time_left = TimeLeft([cell.estimate for cell in cells])
    progress = Progress(len(cells), log, time_left=time_left)
    records = []
    for number, cell in enumerate(cells, start=1):
        path = out_dir / "records" / f"{cell.name}.json"
        done = None if force else finished_record(path, cell.config)
        if done is not None:
            time_left.finish(number - 1, 0.0, ran=False)
            progress.finish(number, cell.name, f"finished earlier, skipped (accuracy {done['accuracy']:.4f})")
            records.append(done)
            continue
        cell_started = time.perf_counter()
        cell_log = progress.cell_log(number, cell.name)
        cell_log("started")
        record = run_cell(cell.name, cell.family, cell.describe, cell.run, cell_log)
        records.append(save_record(record, cell, out_dir, preset=preset, commit=commit, dataset=dataset))
        time_left.finish(number - 1, time.perf_counter() - cell_started)
        progress.finish(number, cell.name, outcome(record, dataset))
    return records


def calibrated(cells, todo, log):
    """``cells`` and ``todo`` with the CNN cells' estimates scaled to this machine's training speed,
    measured when the CNN cells to run are estimated above :data:`plan.CALIBRATE_ABOVE`."""
    from . import plan

    if sum(cell.estimate for cell in todo if cell.family == "deep") <= plan.CALIBRATE_ABOVE:
        return cells, todo
    try:
        speed = plan.training_speed()
    except Exception as error:  # noqa: BLE001  (an estimate is not worth stopping the sweep for)
        log(f"could not time CNN training on this machine ({type(error).__name__}: {error}); "
            f"the CNN estimates are the reference machine's")
        return cells, todo
    log(f"CNN estimates scaled to this machine: {plan.CALIBRATION_ARCH} trains "
        f"{speed * plan.REFERENCE_RATE:.0f} faces/s here, {plan.REFERENCE_RATE:.0f} on the machine the "
        f"estimates were measured on")
    scaled = {cell.name: replace(cell, estimate=cell.estimate / speed) for cell in cells if cell.family == "deep"}
    return ([scaled.get(cell.name, cell) for cell in cells], [scaled.get(cell.name, cell) for cell in todo])


def run_cell(name, family, describe, run, log) -> dict:
    """``run(log)``'s record with the peak memory while it ran; a cell that raises becomes an error record."""
    memory = PeakMemory()
    try:
        # Libraries that print (Keras' epoch progress) go to stderr with the
        # rest of the progress display; stdout stays for results.
        with memory, contextlib.redirect_stdout(sys.stderr):
            record = run(log)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # one failed cell must not end the sweep
        record = error_record(name, family, exc, **describe)
    record.update(memory.result)
    return record


def save_record(record: dict, cell: Cell, out_dir, *, preset: Preset, commit, dataset) -> dict:
    """Add what the sweep knows to a cell's record (settings, preset, commit), make its paths relative to
    ``out_dir`` and write it there atomically: the last file of a cell, so a record points to complete files."""
    record.update({"config": cell.config, "preset": preset.name, "git_commit": commit,
                   "dataset_notes": list(dataset.notes)})
    relative_paths(record, out_dir)
    write_json_atomic(Path(out_dir) / "records" / f"{cell.name}.json", record)
    return record


def outcome(record: dict, dataset) -> str:
    """The progress line's end for a finished cell: its test scores and seconds, or its error."""
    if record.get("status") != "ok":
        return f"failed: {record.get('error')}"
    if record.get("accuracy") is None:
        return "finished"
    return (f"{dataset.test.name} accuracy {record['accuracy']:.4f}, macro F1 {record['f1_macro']:.4f}, "
            f"{record.get('wall_seconds') or 0:.0f} s")

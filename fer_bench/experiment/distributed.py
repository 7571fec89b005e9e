"""A sweep's cells as Dask tasks: ``fer-bench run --dask ADDRESS|local[:N]`` (and ``train cnn --dask``).

Each cell that depends on nothing but the data (every classical cell, every CNN) becomes one task of a
Dask cluster, the longest first; inside a task, feature extraction and the hyperparameter candidates go
through joblib's Dask backend, so one wide cell spreads over the cluster too.  Cells that read the run
folder (the CNN ensemble and the fusion) run here afterwards, as they do without Dask.

How the pieces fit:

- **Data.**  A worker loads the dataset from the same path the client names (a shared file system), once
  per worker process, cuts the preset's subsample, and checks the result's content key against the
  client's: a worker that sees other files fails the cell with a clear error instead of mixing data.  With
  ``scatter`` the client's decoded arrays travel instead, in one task whose result each worker fetches
  once (always so for a dataset given in memory).  The library versions the results depend on are
  checked the same way.
- **Records in one place.**  A worker runs the cell in a scratch folder and returns its record and files
  (model, predictions, curves, checkpoints) as bytes; only the client writes the run folder, each file
  atomically and the record last, exactly as a local sweep does.  So a run folder is the same whichever
  way it ran, and a rerun, with or without Dask, resumes from it.
- **Faults.**  A worker that dies mid-cell has its cell rerun on another one by the scheduler, at most
  ``distributed.scheduler.allowed-failures`` times (:data:`DEAD_WORKER_RETRIES` on a local cluster); past
  that, and for a cell that raises for a reason of its own, the cell is recorded as failed with its error
  and the other cells go on.  Ctrl-C (or SIGTERM, which the CLI turns into it) cancels the cluster's tasks;
  every cell finished until then is already saved.

Dask is imported here only, inside the functions that run with ``--dask``: importing this module (the
command line does, for its options and errors) imports no Dask.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .._core import replacing, write_json_atomic
from .harness import error_record
from .progress import Progress
from .sweep import (PATH_SUFFIXES, Preset, finished_record, outcome, relative_paths, run_cell, save_record,
                    subsample_dataset)

DEAD_WORKER_RETRIES = 3
"""How often a local cluster's scheduler reruns a cell whose worker died (``allowed-failures``)."""

PROGRESS_TOPIC = "fer-bench-progress"
"""Dask event topic on which workers send a cell's progress lines to the client."""

LOCAL = "local"


class DaskSetupError(RuntimeError):
    """Dask is missing, the ``--dask`` value is malformed, or the scheduler cannot be reached."""


class WorkerDataError(ValueError):
    """A worker's data or libraries differ from the client's; the cell fails with this message."""


class RemoteCellError(RuntimeError):
    """``train cnn --dask``: the training failed on its worker (the message is the worker's error)."""


# --------------------------------------------------------------------------- connecting


def parse_dask_option(text: str) -> tuple:
    """``local`` -> ("local", None), ``local:4`` -> ("local", 4), ``tcp://host:8786`` -> ("address", text)."""
    text = str(text).strip()
    if text == LOCAL or text.startswith(LOCAL + ":"):
        count = text[len(LOCAL) + 1:]
        if not count:
            return LOCAL, None
        if not count.isdigit() or int(count) < 1:
            raise DaskSetupError(f"--dask {text}: write local or local:N with N a number of worker processes")
        return LOCAL, int(count)
    if not text:
        raise DaskSetupError("--dask needs a scheduler address (tcp://host:8786) or local[:N]")
    return "address", text


def import_distributed():
    """The ``distributed`` package, or a :class:`DaskSetupError` that says how to install it."""
    try:
        import distributed
    except ImportError:
        raise DaskSetupError("--dask needs Dask: pip install 'fer-bench[dask]'") from None
    return distributed


@contextlib.contextmanager
def dask_client(dask, *, log=print):
    """A ``distributed.Client`` for ``dask``: a client as it is, ``local[:N]`` or a scheduler address.

    A local cluster has N worker processes (default: one per core) of one thread each, and its dashboard
    on a free port; it and the client are closed when the block ends, which stops their tasks.
    """
    distributed = import_distributed()
    if isinstance(dask, distributed.Client):
        yield dask
        return
    kind, value = parse_dask_option(dask)
    with contextlib.ExitStack() as stack:
        if kind == LOCAL:
            import logging

            import dask as dask_package

            workers = value or os.cpu_count() or 1
            # The scheduler of a LocalCluster runs in this process and reads its settings here.
            with dask_package.config.set({"distributed.scheduler.allowed-failures": DEAD_WORKER_RETRIES}):
                cluster = stack.enter_context(distributed.LocalCluster(
                    n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                    silence_logs=logging.ERROR))
            client = stack.enter_context(distributed.Client(cluster))
            log(f"dask: a local cluster of {workers} worker process{'es' if workers > 1 else ''}, one thread each "
                f"(dashboard {client.dashboard_link})")
        else:
            try:
                client = stack.enter_context(distributed.Client(value, timeout="30s"))
            except (OSError, TimeoutError) as error:
                raise DaskSetupError(f"cannot reach the Dask scheduler at {value} ({error}); start one with "
                                     "`dask scheduler` and workers with `dask worker ADDRESS`, or use --dask local")
            log(f"dask: connected to {value}")
        yield client


def cluster_size(client) -> tuple:
    """(workers, threads) the scheduler knows now."""
    workers = client.scheduler_info().get("workers", {})
    return len(workers), sum(info.get("nthreads", 1) for info in workers.values())


def scaled_seconds(estimates, workers: int) -> float:
    """The scaling model of a sweep on ``workers`` equal workers: the cells' seconds shared out, but never less
    than its longest cell, which one worker must run alone (the cells run the longest first)."""
    estimates = [float(e) for e in estimates]
    if not estimates:
        return 0.0
    return max(sum(estimates) / max(1, workers), max(estimates))


# --------------------------------------------------------------------------- the worker's side


@dataclass(frozen=True)
class DataSource:
    """Where a worker finds the dataset and what it must be.

    ``path`` (absolute, as the client sees it) is loaded with ``cache_dir`` and ``seed``, then cut to
    ``preset``'s subsample; ``None`` when the data is scattered.  ``key`` is the content key of the
    client's data (after subsampling), ``versions`` the client's library versions.
    """

    path: str | None
    cache_dir: str | None
    seed: int
    preset: Preset | None
    key: str
    versions: dict


_LOADED: dict = {}
_LOADED_LOCK = threading.Lock()


def worker_dataset(source: DataSource, scattered=None):
    """The dataset on this worker: the scattered one, or the one at ``source.path`` (loaded once per process)."""
    if scattered is not None:
        dataset = scattered
    else:
        from ..data import load_dataset

        cache_dir = usable_folder(source.cache_dir)
        with _LOADED_LOCK:
            memo = (source.path, cache_dir, source.seed, source.preset)
            if memo not in _LOADED:
                dataset = load_dataset(source.path, cache_dir=cache_dir, seed=source.seed)
                if source.preset is not None:
                    dataset = subsample_dataset(dataset, source.preset, source.seed)
                _LOADED.clear()  # one dataset a worker: a sweep has one
                _LOADED[memo] = dataset
            dataset = _LOADED[memo]
    if dataset.content_key != source.key:
        where = f"at {source.path}" if source.path else "sent by the client"
        raise WorkerDataError(
            f"worker {socket.gethostname()}: the dataset {where} has content key {dataset.content_key}, the client's "
            f"has {source.key}; every worker must see the same files at that path, or run with --scatter")
    return dataset


def check_versions(expected: dict) -> None:
    """Raise :class:`WorkerDataError` when this worker's library versions differ from the client's."""
    from fer_classic.model import library_versions

    here = library_versions()
    differ = [f"{name} {here.get(name)} (client: {version})" for name, version in expected.items()
              if name != "python" and here.get(name) != version]
    if differ:
        raise WorkerDataError(f"worker {socket.gethostname()} has {', '.join(differ)}; install the same fer-bench "
                              "and libraries on every worker")


def usable_folder(folder) -> str | None:
    """``folder`` if this machine can create it (a cache path named by the client), else None."""
    if folder is None:
        return None
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return str(folder)


def run_on_worker(task, name: str, family: str, describe: dict, source: DataSource, scattered, cache,
                  inputs: dict) -> dict:
    """The Dask task of one cell: run ``task`` in a scratch folder, return its record and files.

    ``inputs`` ({relative path: bytes}) are laid in the scratch folder first (a CNN's checkpoints, so it
    resumes).  A cell that raises, or whose data or libraries differ from the client's, returns an error
    record.  Returns ``{"record": dict, "files": {relative path: bytes}}``; the record's paths are
    relative to the run folder.
    """
    import joblib
    from distributed import get_worker

    worker = get_worker()

    def log(message):
        with contextlib.suppress(Exception):  # progress lines never fail a cell
            worker.log_event(PROGRESS_TOPIC, {"cell": name, "message": str(message)})

    log(f"started on {worker.address} ({socket.gethostname()})")
    with tempfile.TemporaryDirectory(prefix=f"fer-bench-{name}-") as scratch:
        scratch = Path(scratch)
        for relative, content in inputs.items():
            (scratch / relative).parent.mkdir(parents=True, exist_ok=True)
            (scratch / relative).write_bytes(content)

        def run(cell_log):
            check_versions(source.versions)
            dataset = worker_dataset(source, scattered)
            with joblib.parallel_config(backend="dask"):
                return task(dataset, scratch, usable_folder(cache), cell_log)

        record = run_cell(name, family, describe, run, log)
        relative_paths(record, scratch)
        files = {path.relative_to(scratch).as_posix(): path.read_bytes() for path in sorted(scratch.rglob("*"))
                 if path.is_file() and path.relative_to(scratch).parts[0] != "records"}
    return {"record": record, "files": files}


# --------------------------------------------------------------------------- the client's side


def cell_inputs(cell, out_dir) -> dict:
    """Files of the run folder a worker needs for ``cell``: a CNN's checkpoints and record (to resume it, and
    to keep the name a former architecture name gave it)."""
    if cell.family != "deep":
        return {}
    out_dir = Path(out_dir)
    paths = [out_dir / "records" / f"{cell.name}.json"]
    checkpoints = out_dir / "checkpoints" / cell.name
    if checkpoints.is_dir():
        paths.extend(sorted(p for p in checkpoints.rglob("*") if p.is_file()))
    return {p.relative_to(out_dir).as_posix(): p.read_bytes() for p in paths if p.is_file()}


def write_returned_files(files: dict, record: dict, out_dir) -> dict:
    """Write a worker's files into ``out_dir`` (each atomically) and point the record's paths at them."""
    root = Path(out_dir).resolve()
    for relative, content in files.items():
        target = (root / relative).resolve()
        if root not in target.parents:
            raise ValueError(f"a worker returned a file outside the run folder: {relative}")
        with replacing(target) as tmp:
            Path(tmp).write_bytes(content)
    for key, value in record.items():
        if isinstance(value, str) and key.endswith(PATH_SUFFIXES) and not Path(value).is_absolute():
            record[key] = str(Path(out_dir) / value)
    return record


def held(dataset):
    """The task that holds the client's dataset on the cluster (``--scatter``)."""
    return dataset


def submit_cells(client, cells, *, source: DataSource, dataset, scatter: bool, cache, out_dir):
    """Submit every cell's task, the longest first; returns {future: cell}.

    With ``scatter`` the dataset travels once to the scheduler inside a task, and each worker fetches the
    result once from a worker that holds it.  Unlike ``Client.scatter``'s data, which is lost for good with
    the last worker holding it, a task's result is computed again when its worker dies.
    """
    scattered = None
    if scatter:
        import warnings

        with warnings.catch_warnings():  # the data is meant to be in this one task ("Sending large graph")
            warnings.filterwarnings("ignore", message="Sending large graph")
            scattered = client.submit(held, dataset, key=f"fer-bench-data-{dataset.content_key}-{time.time_ns()}",
                                      pure=False, priority=1_000_000_000)
    futures = {}
    for cell in cells:
        future = client.submit(run_on_worker, cell.task, cell.name, cell.family, cell.describe, source, scattered,
                               None if cache is None else str(cache), cell_inputs(cell, out_dir),
                               key=f"fer-bench-{cell.name}-{os.getpid()}-{time.time_ns()}", pure=False,
                               priority=int(cell.estimate))
        futures[future] = cell
    return futures


def gather_cells(client, futures: dict, on_result) -> None:
    """Call ``on_result(cell, record, files)`` for each cell as it finishes; a lost task becomes an error record.

    An interrupt (Ctrl-C, SIGTERM) cancels every task not yet finished and goes on up.
    """
    distributed = import_distributed()
    try:
        for future in distributed.as_completed(list(futures)):
            cell = futures.pop(future)
            try:
                result = future.result()
                record, files = result["record"], result["files"]
            except Exception as error:  # the worker died too often, or the task could not run at all
                record, files = error_record(cell.name, cell.family, error, **cell.describe), {}
            # Released at once: a result still held on a worker that then dies would be computed again.
            future.release()
            on_result(cell, record, files)
    except BaseException:
        with contextlib.suppress(Exception):
            client.cancel(list(futures), force=True)
        raise


def data_source(dataset, *, data_path, cache_dir, seed, preset, scatter: bool) -> DataSource:
    from fer_classic.model import library_versions

    return DataSource(None if scatter else str(Path(data_path).resolve()),
                      None if cache_dir is None else str(Path(cache_dir).resolve()), seed, preset,
                      dataset.content_key, library_versions())


@dataclass(frozen=True)
class DaskExecutor:
    """``run_sweep(..., execute=DaskExecutor(dask, scatter))``: the sweep's cells on a Dask cluster.

    ``dask`` is a scheduler's address (``tcp://host:8786``), ``local[:N]`` for a ``LocalCluster`` of N
    worker processes, or a ``distributed.Client``; ``scatter`` sends the client's decoded faces to the
    workers instead of each loading ``data_path`` (always so for a dataset given in memory).
    """

    dask: object
    scatter: bool = False

    def __call__(self, cells, **sweep) -> list:
        return run_cells_on_dask(cells, self.dask, scatter=self.scatter, **sweep)


def dask_executor(dask, *, scatter: bool = False):
    """A :class:`DaskExecutor`, or None (the sweep runs here) when ``dask`` is None."""
    return None if dask is None else DaskExecutor(dask, scatter)


def run_cells_on_dask(cells, dask, *, dataset, data_path, cache_dir, preset, seed, scatter, out_dir, force, commit,
                      log=print) -> list:
    """Run a sweep's planned ``cells`` on a Dask cluster; return the records in plan order.

    Finished cells are skipped as in :func:`fer_bench.experiment.sweep.run_sweep`, the others are Dask
    tasks (see the module's text), and cells without a task run here last.
    """
    out_dir = Path(out_dir)
    scatter = bool(scatter or data_path is None)
    cache = Path(cache_dir) / "features" if cache_dir else None
    numbers = {cell.name: number for number, cell in enumerate(cells, start=1)}
    progress = Progress(len(cells), log)
    records = {}
    todo = []
    for cell in cells:
        done = None if force else finished_record(out_dir / "records" / f"{cell.name}.json", cell.config)
        if done is not None:
            records[cell.name] = done
            progress.finish(numbers[cell.name], cell.name,
                            f"finished earlier, skipped (accuracy {done['accuracy']:.4f})")
        else:
            todo.append(cell)
    remote = [cell for cell in todo if cell.task is not None]

    def finish(cell, record):
        records[cell.name] = save_record(record, cell, out_dir, preset=preset, commit=commit, dataset=dataset)
        progress.finish(numbers[cell.name], cell.name, outcome(record, dataset))

    with dask_client(dask, log=log) as client:
        workers, threads = cluster_size(client)
        if workers:
            from .plan import clock

            estimate = scaled_seconds([cell.estimate for cell in remote], workers)
            log(f"dask: {workers} workers, {threads} threads; {len(remote)} cells as tasks, the longest first; "
                f"estimated {clock(estimate)} (the cells' estimates shared out over the workers, the longest "
                "at least)")
        else:
            log(f"dask: no worker has joined the scheduler yet; the {len(remote)} cells wait for one")
        if scatter:
            log("dask: the decoded arrays are sent to every worker" + (" (a dataset given in memory)"
                                                                       if data_path is None else ""))
        cell_logs = {}

        def on_event(event):
            _, message = event
            name = message.get("cell")
            if name in numbers:
                if name not in cell_logs:  # the cell's clock starts when a worker starts it
                    cell_logs[name] = progress.cell_log(numbers[name], name)
                cell_logs[name](message.get("message", ""))

        client.subscribe_topic(PROGRESS_TOPIC, on_event)
        try:
            source = data_source(dataset, data_path=data_path, cache_dir=cache_dir, seed=seed, preset=preset,
                                 scatter=scatter)
            futures = submit_cells(client, remote, source=source, dataset=dataset, scatter=scatter, cache=cache,
                                   out_dir=out_dir)
            gather_cells(client, futures,
                         lambda cell, record, files: finish(cell, write_returned_files(files, record, out_dir)))
        finally:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
    for cell in todo:
        if cell.task is None:  # reads the finished cells in the run folder: here, after them
            cell_log = progress.cell_log(numbers[cell.name], cell.name)
            cell_log("started")
            finish(cell, run_cell(cell.name, cell.family, cell.describe, cell.run, cell_log))
    return [records[cell.name] for cell in cells]


def run_deep_cell_on_dask(dask, dataset, arch, out_dir, *, data_path, cache_dir, seed, scatter=False, log=print,
                          **settings) -> dict:
    """``fer-bench train cnn --dask``: one CNN trained as a Dask task, its files written here.

    ``settings`` are :func:`fer_bench.experiment.deep_cell.run_deep_cell`'s; a checkpoint in ``out_dir``
    is sent along, so ``--resume`` works as it does locally.  Returns the record as the local command
    writes it; raises :class:`RemoteCellError` if the training failed.
    """
    from .deep_cell import deep_cell_id, run_folder_arch
    from .sweep import Cell, CellTask, run_deep_cell

    out_dir = Path(out_dir)
    arch = run_folder_arch(arch, out_dir)
    name = settings.get("cell") or deep_cell_id(arch)
    cell = Cell(name, "deep", {}, None, {"dataset": dataset.name, "arch": arch},
                task=CellTask(run_deep_cell, (arch,), {**settings, "seed": seed}))
    scatter = bool(scatter or data_path is None)
    results = []

    def on_result(cell, record, files):
        if record.get("status") != "ok":  # as locally: a failed training writes no record
            raise RemoteCellError(f"{name} failed on its Dask worker: {record.get('error')}")
        record = write_returned_files(files, record, out_dir)
        write_json_atomic(out_dir / "records" / f"{name}.json", record)
        results.append(record)

    with dask_client(dask, log=log) as client:
        client.subscribe_topic(PROGRESS_TOPIC, lambda event: log(event[1].get("message", "")))
        try:
            source = data_source(dataset, data_path=data_path, cache_dir=cache_dir, seed=seed, preset=None,
                                 scatter=scatter)
            futures = submit_cells(client, [cell], source=source, dataset=dataset, scatter=scatter, cache=None,
                                   out_dir=out_dir)
            gather_cells(client, futures, on_result)
        finally:
            with contextlib.suppress(Exception):
                client.unsubscribe_topic(PROGRESS_TOPIC)
    return results[0]

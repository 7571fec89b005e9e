"""The ``fer-bench`` command line.

Commands only parse arguments and call plain functions.  User errors print
one line on stderr and exit with status 1, without a traceback; data goes to
files or stdout, diagnostics to stderr.

Over 500 lines because it is the whole command line: each command is a
short parse-and-call, and the options they share (data, cache, seed, model)
are defined once here.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import signal
import sys
import threading
from pathlib import Path

import click

from fer_classic.classifiers import CLASSIFIERS
from fer_classic.features import FEATURES, LandmarkModelError, parse_feature_spec
from fer_classic.model import ModelFileError
from fer_deep import (ARCHITECTURE_ALIASES, ARCHITECTURE_NAMES, DeepDependencyError, DeepModelFileError,
                      check_architecture_name)

from ._core import MAX_IMAGE_PIXELS
from .data import CACHE_ENV, DATA_ENV, DatasetError, check_splits, default_cache_dir
from .faces import DEFAULT_DETECTOR, DEFAULT_MAX_SIDE, DEFAULT_MIN_FACE, DETECTORS
from .experiment.distributed import DaskSetupError, RemoteCellError, dask_executor, parse_dask_option
from .experiment.sweep import FEATURE_SETS, PRESETS, deep_architectures, preset_networks
from .outputs import OutputError, naming_outputs, output_file, output_folder
from .workers import exit_leaving_calls

USER_ERRORS = (DatasetError, ModelFileError, LandmarkModelError, FileNotFoundError, click.BadParameter,
               DeepModelFileError, DeepDependencyError, DaskSetupError, RemoteCellError, OutputError)
RUN_FOLDERS = ("records", "models", "predictions")
"""What a run writes under its --out folder; each must be a folder that can be written."""


class UserError(click.ClickException):
    """One line on stderr, exit status 1."""

    def show(self, file=None):
        click.echo(f"fer-bench: error: {self.format_message()}", err=True)


_stopped_by: list = []  # the signal that stopped the command, if one did


def _interrupt(signal_number, frame):
    _stopped_by.append(signal_number)
    raise KeyboardInterrupt


def interrupted_status() -> int:
    """Exit status of a command stopped by Ctrl-C (130) or SIGTERM (143): 128 plus the signal's number."""
    return 128 + (_stopped_by[-1] if _stopped_by else signal.SIGINT)


@contextlib.contextmanager
def user_errors():
    """Turn the errors a user can fix into one clear line and exit status 1.

    SIGTERM (``kill PID``, a job scheduler stopping the run) is handled like
    Ctrl-C: the interrupt unwinds through joblib, which then stops its worker
    processes, and the command exits 143 (Ctrl-C: 130), 128 plus the signal's
    number, as a shell reports a process the signal ended.  Left to SIGTERM's
    default, the main process would die at once and its workers would go on
    fitting, orphaned, until they finished.  (After SIGKILL, which cannot be
    handled, the workers end themselves: :mod:`fer_bench.workers`.)
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        _stopped_by.clear()
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    except USER_ERRORS as error:
        raise UserError(str(error)) from None
    except KeyboardInterrupt:
        click.echo("fer-bench: interrupted; finished cells are saved, rerun the same command to resume", err=True)
        exit_leaving_calls(interrupted_status())  # a fit the interrupt left running ends with the process
        sys.exit(interrupted_status())
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def parse_value(text: str):
    """``10`` -> 10, ``(4, 4)`` -> (4, 4), ``balanced`` -> 'balanced', ``None`` -> None."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(pairs, *, nested: bool = False) -> dict:
    """``KEY=VALUE`` options -> dict; with ``nested``, ``feature.key=value`` -> {feature: {key: value}}."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE")
        key = key.strip()
        if nested:
            feature, dot, name = key.partition(".")
            if not dot:
                raise click.BadParameter(f"{pair!r}: write FEATURE.PARAM=VALUE, e.g. hog.orientations=12")
            out.setdefault(feature, {})[name] = parse_value(value)
        else:
            out[key] = parse_value(value)
    return out


def split_list(value: str | None) -> list:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def validate_features(ctx, param, value):
    try:
        for spec in split_list(value):
            parse_feature_spec(spec)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    return value


def validate_classifiers(ctx, param, value):
    for name in split_list(value):
        if name.lower() not in CLASSIFIERS:
            raise click.BadParameter(f"unknown classifier {name!r}; choose from {', '.join(CLASSIFIERS)}")
    return value


def validate_cnns(ctx, param, value):
    names = deep_architectures()
    for name in split_list(value):
        if name not in names and name not in ARCHITECTURE_ALIASES:
            raise click.BadParameter(f"unknown CNN {name!r}; choose from {', '.join(names) or 'none registered'}")
    return value


data_option = click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    envvar=DATA_ENV,
    default="data/fer2013",
    show_default=True,
    help=f"Dataset folder (Kaggle FER-2013 layout or class folders) or fer2013.csv; env {DATA_ENV}.",
)
cache_option = click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    envvar=CACHE_ENV,
    default=None,
    help=f"Where decoded arrays and features are cached [default: ~/.cache/fer-bench; env {CACHE_ENV}].",
)
seed_option = click.option("--seed", type=int, default=0, show_default=True, help="Seed of splits and models.")


def validate_dask(ctx, param, value):
    try:
        return value if value is None else (parse_dask_option(value) and value)
    except DaskSetupError as error:
        raise click.BadParameter(str(error)) from None


def dask_options(command):
    """--dask and --scatter: run the cells as Dask tasks (fer_bench.experiment.distributed)."""

    @functools.wraps(command)
    def checked(*args, **kwargs):
        if kwargs["scatter"] and kwargs["dask_address"] is None:
            raise click.UsageError("--scatter sends the data to Dask workers: give --dask too")
        return command(*args, **kwargs)

    scatter = click.option(
        "--scatter", is_flag=True,
        help="With --dask: send the decoded faces from here to every worker instead of each worker reading "
             "--data (for workers without the data on a shared file system).")
    dask = click.option(
        "--dask", "dask_address", default=None, callback=validate_dask, metavar="ADDRESS|local[:N]",
        help="Run the cells as tasks of a Dask cluster: a scheduler's address (tcp://host:8786) or local:N for "
             "N worker processes here.  Workers need the same fer-bench and libraries, and --data at the same "
             "path (or --scatter).  Needs pip install 'fer-bench[dask]'.")
    return dask(scatter(checked))


class FerBenchGroup(click.Group):
    """A click group whose usage errors are one line on stderr and exit status 1, like every user error."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as error:
            hint = f" (see '{error.ctx.command_path} --help')" if error.ctx is not None else ""
            click.echo(f"fer-bench: error: {error.format_message()}{hint}", err=True)
            sys.exit(1)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except click.Abort:
            click.echo("fer-bench: aborted", err=True)
            sys.exit(1)
        sys.exit(0)


@click.group(cls=FerBenchGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fer-bench")
def cli():
    """fer-bench: facial expression recognition, classical features and CNNs side by side.

    \b
    fer-bench data info                       split sizes and class counts
    fer-bench list                            feature and classifier registries
    fer-bench run --features hog --classifier svm
                                              train, select on PublicTest, score on PrivateTest
    """
    from . import workers

    workers.install()  # worker processes end with this one, also after SIGKILL
    _show_cache_warnings_as_lines()


def _show_cache_warnings_as_lines():
    """Print each cache warning (a rebuilt entry, an unwritable folder) as one line on stderr, not Python's two."""
    import warnings

    from ._core import CacheWarning

    shown = warnings.showwarning
    if getattr(shown, "fer_bench", False):
        return

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CacheWarning):
            click.echo(f"fer-bench: warning: {message}", err=True)
        else:
            shown(message, category, filename, lineno, file, line)

    show.fer_bench = True
    warnings.showwarning = show


def main():
    cli(prog_name="fer-bench")


# --------------------------------------------------------------------------- cache


@cli.group("cache")
def cache_group():
    """Show and prune the cache of decoded datasets and extracted features."""


@cache_group.command("info")
@cache_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def cache_info_command(cache_dir, as_json):
    """What the cache folder holds: files and size per kind, and when they were last used."""
    import json

    from .cache import cache_info, format_info

    info = cache_info(cache_dir or default_cache_dir())
    click.echo(json.dumps(info, indent=2) if as_json else format_info(info))


@cache_group.command("clear")
@cache_option
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Remove only the files no run has used for DAYS days [default: remove all].")
def cache_clear_command(cache_dir, older_than):
    """Remove cached datasets and features (only the cache's own files; anything else is left alone)."""
    from .cache import clear_cache, format_bytes

    result = clear_cache(cache_dir or default_cache_dir(), older_than_days=older_than)
    click.echo(f"removed {result['removed']} file(s), {format_bytes(result['removed_bytes'])}, from "
               f"{result['folder']}; kept {result['kept']}")
    if result["failed"]:
        raise UserError(f"{result['failed']} file(s) in {result['folder']} could not be removed; "
                        "check their permissions and run the command again")


# --------------------------------------------------------------------------- data


@cli.group()
def data():
    """Inspect datasets."""


@data.command("info")
@data_option
@cache_option
@seed_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def data_info(data_path, cache_dir, seed, as_json):
    """Print the split sizes and the per-class counts of a dataset."""
    import json

    from .data import load_dataset

    with user_errors():
        dataset = load_dataset(data_path, cache_dir=cache_dir or default_cache_dir(), seed=seed)
    info = dataset.describe()
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"dataset: {info['dataset']}  ({info['source']})")
    click.echo(f"split:   {info['split_method']}")
    names = list(info["splits"])
    width = max(len(c) for c in info["classes"] + ["total"])
    click.echo(f"{'class':<{width}}  " + "  ".join(f"{n:>11}" for n in names))
    for name in info["classes"]:
        click.echo(f"{name:<{width}}  " + "  ".join(f"{info['splits'][n]['per_class'][name]:>11,}" for n in names))
    click.echo(f"{'total':<{width}}  " + "  ".join(f"{info['splits'][n]['n']:>11,}" for n in names))


# --------------------------------------------------------------------------- list


@cli.command("list")
def list_registries():
    """Print the feature and classifier registries with their parameters."""
    from fer_classic.classifiers import CLASSIFIERS

    click.echo("features (combine with '+', e.g. hog+lbp+landmarks):")
    for name, cls in FEATURES.items():
        params = {k: v for k, v in cls().get_params().items() if k != "n_jobs"}
        click.echo(f"  {name:<11} " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    click.echo("classifiers:")
    for name, spec in CLASSIFIERS.items():
        click.echo(f"  {name:<11} {spec.description}")
        click.echo(f"  {'':<11} " + ", ".join(f"{k}={v!r}" for k, v in spec.defaults().items()))
        if spec.grid:
            click.echo(f"  {'':<11} selected on the validation split from: "
                       + "; ".join(f"{k} in {v}" for k, v in spec.grid.items()))
    from fer_deep import ARCHITECTURE_COSTS, DEFAULT_EPOCHS

    click.echo("CNNs (fer-bench train cnn --arch NAME; parameters, multiply-adds of one face, default epochs):")
    for name, description in ARCHITECTURE_NAMES.items():
        parameters, multiply_adds = ARCHITECTURE_COSTS[name]
        click.echo(f"  {name:<13} {parameters / 1e6:.2f} M parameters, {multiply_adds / 1e9:.3f} G multiply-adds, "
                   f"{DEFAULT_EPOCHS[name]} epochs")
        click.echo(f"  {'':<13} {description}")


# --------------------------------------------------------------------------- run


@cli.command("run")
@click.option("--all", "run_all", is_flag=True,
              help=f"Every feature set ({', '.join(FEATURE_SETS)}) x every classifier, and every CNN; "
                   "--features, --classifier and --cnn narrow it.")
@click.option("--features", callback=validate_features, default=None,
              help=f"Feature set(s), comma-separated; each a '+' combination of {', '.join(FEATURES)} "
                   "[default: hog; with --all: " + ",".join(FEATURE_SETS) + "].")
@click.option("--classifier", callback=validate_classifiers, default=None,
              help=f"Classifier(s), comma-separated: {', '.join(CLASSIFIERS)} [default: svm; with --all: all].")
@click.option("--cnn", "cnns", callback=validate_cnns, default=None,
              help=f"CNN architecture(s), comma-separated: {', '.join(deep_architectures()) or 'none registered'} "
                   "[default: none; with --all: all].  Alone, runs only these CNNs.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="full", show_default=True,
              help="; ".join(f"{name}: {preset.description}" for name, preset in PRESETS.items()) + ".")
@data_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="runs/latest", show_default=True,
              help="Output folder for records, models, predictions and the report.")
@cache_option
@seed_option
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Fix a classifier parameter (repeatable), e.g. C=10 or class_weight=balanced.")
@click.option("--feature-param", "feature_params", multiple=True, metavar="FEATURE.KEY=VALUE",
              help="Set a feature parameter (repeatable), e.g. hog.pixels_per_cell=(4,4).")
@click.option("--select/--no-select", default=None,
              help="Choose hyperparameters on the validation split (PublicTest) from the registry grid "
                   "[default: the preset's; full selects, quick does not].")
@click.option("--flip/--no-flip", default=False, show_default=True,
              help="Add horizontally mirrored copies of the training faces.")
@click.option("--tta", type=click.Choice(["none", "flip"]), default="none", show_default=True,
              help="Test-time augmentation of the classical cells: flip averages each face with its mirror image "
                   "when selecting, scoring and in the saved model (twice the prediction cost; cells named "
                   "...__tta_flip).  For CNNs: train cnn --tta.")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="CNN training epochs [default: the preset's; full: per architecture].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="CNN batch size [default: 64].")
@click.option("--force", is_flag=True, help="Retrain cells that already have a finished record.")
@click.option("--report/--no-report", "write_report", default=True, show_default=True,
              help="Write records.json/.csv, report.md and report.html into --out after the sweep.")
@dask_options
def run(run_all, features, classifier, cnns, preset, data_path, out_dir, cache_dir, seed, params, feature_params,
        select, flip, tta, epochs, batch_size, force, write_report, dask_address, scatter):
    """Train, select on the validation split and score on the test split; write records, models and a report.

    Every (features, classifier) pair is one cell, every CNN another.  A
    finished cell with the same settings is skipped on a rerun; a failed one is
    retried; Ctrl-C loses at most the cell in progress.
    """
    from .experiment.sweep import run_sweep

    feature_list, classifier_list, cnn_list = cells_to_run(run_all, features, classifier, cnns, preset)
    with user_errors(), naming_outputs(("--out", out_dir)):
        output_folder(out_dir, "--out", data=data_path, subfolders=RUN_FOLDERS)
        classifier_params = parse_params(params)
        feature_param_dict = parse_params(feature_params, nested=True)
        records = run_sweep(
            data_path=data_path,
            features=feature_list,
            classifiers=classifier_list,
            cnns=cnn_list,
            out_dir=out_dir,
            cache_dir=cache_dir or default_cache_dir(),
            preset=preset,
            seed=seed,
            classifier_params=classifier_params,
            feature_params=feature_param_dict,
            select=select,
            flip=flip,
            tta=tta,
            epochs=epochs,
            batch_size=batch_size,
            force=force,
            log=lambda message: click.echo(message, err=True),
            ensembles=run_all,
            execute=dask_executor(dask_address, scatter=scatter),
        )
    click.echo(format_records_table(records))
    status = 0
    if write_report:
        from .report import write_report as render

        try:
            written = render(out_dir)
            click.echo(f"report: {written['html']} (and report.md, records.json, records.csv)", err=True)
        except Exception as error:  # the cells are saved; a report bug must not read as a lost sweep
            click.echo(f"fer-bench: error: the report could not be written ({type(error).__name__}: {error}); "
                       f"the records are saved, retry with 'fer-bench report {out_dir}'", err=True)
            status = 1
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        for record in failed:
            click.echo(f"fer-bench: {record['cell']} failed: {record['error']}", err=True)
        status = 1
    if status:
        sys.exit(status)


def cells_to_run(run_all: bool, features, classifier, cnns, preset="full") -> tuple:
    """Feature sets, classifiers and CNNs a ``run`` asked for.

    ``--all`` starts from every registered feature set, classifier and the
    preset's CNNs (the CPU networks; all of them with ``--preset
    accelerator``) and the lists given narrow it; without ``--all`` the
    defaults are hog x svm, and ``--cnn`` alone runs only CNNs.
    """
    feature_list = split_list(features)
    classifier_list = [c.lower() for c in split_list(classifier)]
    cnn_list = split_list(cnns)
    if run_all:
        # Classifiers that need sparse bag-of-words features have none to work on in FEATURE_SETS.
        every = [name for name, spec in CLASSIFIERS.items() if not spec.needs_words]
        return (feature_list or list(FEATURE_SETS), classifier_list or every, cnn_list or preset_networks(preset))
    if cnn_list and features is None and classifier is None:
        return [], [], cnn_list
    return feature_list or ["hog"], classifier_list or ["svm"], cnn_list


def format_records_table(records) -> str:
    """A short text table of records: cell, accuracy, macro F1, timings."""
    width = max([30] + [len(r.get("cell", "")) for r in records])
    header = (f"{'cell':<{width}} {'test':>12} {'accuracy':>9} {'macro F1':>9} {'fit s':>8} {'ms/face':>8} "
              f"{'status':>7}")
    lines = [header, "-" * len(header)]
    for r in records:
        if r.get("status") == "ok":
            lines.append(
                f"{r['cell']:<{width}} {(r.get('split') or {}).get('test', ''):>12} {r['accuracy']:>9.4f} "
                f"{r['f1_macro']:>9.4f} {r.get('fit_seconds') or 0:>8.1f} {r.get('predict_ms_per_face') or 0:>8.3f} "
                f"{'ok':>7}"
            )
        else:
            lines.append(f"{r['cell']:<{width}} {'':>12} {'':>9} {'':>9} {'':>8} {'':>8} {'error':>7}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- report, compare


@contextlib.contextmanager
def report_errors():
    """A run folder that cannot be reported on is a user error (one line, exit 1)."""
    from .report import ReportError

    try:
        yield
    except ReportError as error:
        raise UserError(str(error)) from None


run_dir_argument = click.argument("run_dir", type=click.Path(path_type=Path))
resamples_option = click.option("--resamples", type=click.IntRange(min=1), default=1000, show_default=True,
                                help="Bootstrap resamples of the 95% confidence intervals.")


@cli.command("report")
@run_dir_argument
@resamples_option
def report(run_dir, resamples):
    """Rebuild the report of RUN_DIR from its records and predictions, without retraining.

    Writes records.json, records.csv, report.md (plots in plots/) and a
    self-contained report.html into RUN_DIR and prints the HTML path.
    """
    from .report import write_report

    with user_errors(), report_errors(), naming_outputs(("RUN_DIR", run_dir)):
        if Path(run_dir).is_dir():  # a missing one is the report's error: it names the command that makes one
            output_folder(run_dir, "RUN_DIR", create=False, subfolders=("plots",))
        written = write_report(run_dir, n_resamples=resamples, log=lambda message: click.echo(message, err=True))
    click.echo(written["html"])
    if _unreadable_records(written["analysis"].records):
        sys.exit(1)


def _unreadable_records(records) -> bool:
    """Say on stderr which record files could not be read (their cells are missing from the figures); any?"""
    from .report.analysis import unreadable_records

    messages = unreadable_records(records)
    for message in messages:
        click.echo(f"fer-bench: error: {message}; that cell is left out of the figures", err=True)
    return bool(messages)


@cli.command("compare")
@run_dir_argument
@click.option("--models", default=None, metavar="A,B",
              help="Compare these two cells (e.g. hog__svm,cnn-seed) instead of the best classical and best deep.")
@resamples_option
def compare(run_dir, models, resamples):
    """Print the classical-vs-deep summary of RUN_DIR: leaderboard, verdict, McNemar and cost."""
    from .report import analyse_run, summary_text

    names = split_list(models)
    if models is not None and len(names) != 2:
        raise UserError("--models takes two names, e.g. --models hog__svm,cnn-seed")
    with user_errors(), report_errors():
        analysis = analyse_run(run_dir, n_resamples=resamples)
        click.echo(summary_text(analysis, tuple(names) or None))
    if _unreadable_records(analysis.records):
        sys.exit(1)


@cli.command("evaluate")
@click.argument("models", metavar="MODEL...", nargs=-1, required=True)
@click.option("--data", "data_paths", multiple=True, type=click.Path(path_type=Path), envvar=DATA_ENV,
              default=("data/fer2013",), show_default=True, metavar="PATH",
              help="A labelled dataset (FER-2013 CSV or folders, class folders, split folders); repeatable.")
@click.option("--split", default="test", show_default=True,
              help="The split scored, by its name (PrivateTest, val, ...) or role (train, val, test), or 'all'.")
@click.option("--label-map", default=None, metavar="DATA=MODEL,...",
              help="Read a data class as a model class, or leave it out with =ignore, e.g. contempt=ignore,"
                   "calm=neutral (common synonyms such as anger, happiness, surprised map by themselves).")
@click.option("--detect", type=click.Choice(list(DETECTORS)), default=None,
              help="Find the faces in each image as predict does and score the largest [default: each image is "
                   "a face crop].")
@click.option("--min-face", type=click.IntRange(min=1), default=DEFAULT_MIN_FACE, show_default=True, metavar="N",
              help="With --detect: smallest face found, in pixels.")
@click.option("--max-side", type=click.IntRange(min=64), default=DEFAULT_MAX_SIDE, show_default=True, metavar="N",
              help="With --detect: larger images are searched downscaled to this longest side.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="runs/latest", show_default=True,
              help="Folder whose evaluations/ receives the records; its report gains a cross-dataset section.")
@cache_option
@seed_option
@resamples_option
@click.option("--trust", is_flag=True, help="Allow pickle (joblib) model files, which run any code they hold.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per model x dataset on stdout (the table goes to stderr).")
@click.option("--report/--no-report", "write_report", default=True, show_default=True,
              help="Rebuild the report of --out afterwards.")
def evaluate(models, data_paths, split, label_map, detect, min_face, max_side, out_dir, cache_dir, seed, resamples,
             trust, as_json, write_report):
    """Score saved models (files or shipped names) on labelled datasets, over the classes they share.

    Class names are matched case-insensitively with common synonyms and
    --label-map; data classes the model lacks are not scored, model classes
    the data lacks are taken out of its answers (the unrestricted accuracy is
    reported too).  Writes OUT/evaluations/MODEL@DATASET-SPLIT[+DETECTOR].json
    and .npz, and rebuilds OUT's report with a cross-dataset section.
    """
    import json

    from .evaluate import (EVALUATIONS_DIR, EvaluationError, evaluate_models, format_evaluations, parse_label_map,
                           summary)

    with user_errors(), naming_outputs(("--out", out_dir)):
        # Before any model or dataset is loaded; the report's plots/ is written too when --report rebuilds it.
        output_folder(out_dir, "--out", data=data_paths,
                      subfolders=(EVALUATIONS_DIR, "plots") if write_report else (EVALUATIONS_DIR,))
        try:
            records = evaluate_models(list(models), data_paths, out_dir, split=split,
                                      label_map=parse_label_map(label_map), detect=detect, min_face=min_face,
                                      max_side=max_side, cache_dir=cache_dir or default_cache_dir(), seed=seed,
                                      n_resamples=resamples, trust=trust,
                                      log=lambda message: click.echo(f"fer-bench: {message}", err=True))
        except EvaluationError as error:
            raise UserError(str(error)) from None
    click.echo(format_evaluations(records), err=as_json)
    for record in records if as_json else ():
        click.echo(json.dumps(summary(record)))
    if write_report:
        from .report import write_report as render

        with user_errors(), report_errors(), naming_outputs(("--out", out_dir)):
            written = render(out_dir, n_resamples=resamples)
        click.echo(f"report: {written['html']} (cross-dataset section)", err=True)


@cli.command("ensemble")
@click.argument("cells", metavar="CELL,CELL[,...]")
@click.option("--name", default=None, help="Name of the new cell [default: ensemble-CELL-CELL...].")
@data_option
@cache_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="runs/latest", show_default=True,
              help="The run folder holding the cells; the ensemble is written there as a cell.")
@click.option("--report/--no-report", "write_report", default=True, show_default=True,
              help="Rebuild the run's report afterwards.")
def ensemble(cells, name, data_path, cache_dir, out_dir, write_report):
    """Average finished cells' models (CNNs, classical or both) as a new cell of the run.

    The weights are chosen on the validation split; the test split scores the
    ensemble, and McNemar's test compares it with its best member.  A member
    may be a shipped model, as shipped:NAME (`fer-bench models` lists them),
    e.g. `fer-bench ensemble cnn-vgg_cpu,shipped:cnn` to add a network you
    trained to the shipped one; the ensemble file refers to the shipped file
    instead of copying it.
    """
    from .data import load_dataset
    from .ensemble import SHIPPED_PREFIX
    from .experiment.ensemble_cell import run_ensemble_cell

    members = split_list(cells)
    if len(members) < 2:
        raise click.UsageError("an ensemble needs at least two cells, e.g. cnn-vgg_cpu,cnn-resnet_cpu")
    repeated = sorted({member for member in members if members.count(member) > 1})
    if repeated:
        raise click.UsageError(f"{repeated[0]} is given twice; name each member once")
    name = name or "ensemble-" + "-".join(member.replace(":", "-") for member in members)
    with user_errors(), naming_outputs(("--out", out_dir)):
        # Shipped models alone need no run folder of cells: the ensemble starts one.
        output_folder(out_dir, "--out", data=data_path, subfolders=RUN_FOLDERS,
                      create=all(member.startswith(SHIPPED_PREFIX) for member in members))
        dataset = load_dataset(data_path, cache_dir=cache_dir or default_cache_dir())
        check_splits(dataset)
        try:
            record = run_ensemble_cell(dataset, name, members, out_dir, log=lambda message: click.echo(message,
                                                                                                      err=True))
        except ValueError as error:
            raise UserError(str(error)) from None
    click.echo(format_records_table([record]))
    if write_report:
        from .report import write_report as render

        written = render(out_dir)
        click.echo(f"report: {written['html']}", err=True)


# --------------------------------------------------------------------------- deploy


@cli.command("deploy")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--trust", is_flag=True,
              help="Allow a pickle (joblib) MODEL: loading one runs any code it holds, so only for trusted files.")
def deploy(model_path, out, trust):
    """Write a copy of the classical MODEL with fast prediction paths to OUT, without retraining.

    An RBF SVC becomes a VectorizedSVC (kernel by matrix products instead of
    libsvm's per-pair loop): the same predictions and probabilities, several
    times faster batched.  Any other model is copied as it is.  Prints what
    changed on stderr.  OUT is a skops file, which loads without running code,
    so this also turns a trusted joblib model of an earlier fer-bench into
    one that anybody can load safely.
    """
    from fer_classic.model import ClassicModel, prepare_for_deployment

    with user_errors(), naming_outputs(("OUT", out)):
        output_file(out, "OUT", models=[model_path])
        converted = prepare_for_deployment(ClassicModel.load(model_path, trust=trust))
        path = converted.save(out)
    click.echo(f"{path}: {', '.join(converted.metadata['deployment']) or 'no change'}", err=True)


# --------------------------------------------------------------------------- train cnn, explain


@cli.group("train")
def train_group():
    """Train one model and save it (the CNNs of the deep path)."""


@train_group.command("cnn")
@click.option("--arch", type=click.Choice([*ARCHITECTURE_NAMES, *ARCHITECTURE_ALIASES]), default="tutorial",
              show_default=True, callback=lambda ctx, param, value: check_architecture_name(value),
              help="; ".join(f"{name}: {text}" for name, text in ARCHITECTURE_NAMES.items()) + ".")
@click.option("--epochs", type=click.IntRange(min=1), default=None,
              help="Maximum epochs; early stopping on the validation split may end sooner "
                   "[default: per architecture, see fer_deep.DEFAULT_EPOCHS].")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="Batch size.")
@click.option("--resume", is_flag=True,
              help="Continue from the checkpoint of an interrupted run with the same settings, or go on from a "
                   "finished one given more --epochs (constant or plateau schedule); else start afresh.")
@data_option
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="runs/latest", show_default=True,
              help="Output folder: records/, models/, predictions/, curves/, checkpoints/.")
@cache_option
@seed_option
@click.option("--train-subset", type=click.IntRange(min=1), default=None,
              help="Train on a stratified subset of this many training faces [default: all].")
@click.option("--tta", type=click.Choice(["none", "flip", "ten_crop"]), default="none", show_default=True,
              help="Test-time augmentation: flip averages each face with its mirror image; ten_crop the four "
                   "corner windows, the centre and their mirror images (vgg_cpu, resnet_cpu).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Training parameter (repeatable), e.g. learning_rate=0.01, optimizer=sgd, schedule=cosine, "
                   "class_weight=balanced, patience=5, augment=False.")
@click.option("--arch-param", "arch_params", multiple=True, metavar="KEY=VALUE",
              help="Architecture parameter (repeatable), e.g. filters=(32,64,128,256) for vgg.")
@click.option("--name", "cell_name", default=None, metavar="NAME",
              help="Name of the cell in --out [default: cnn-ARCH]: another seed or width of a network trained "
                   "beside the first, e.g. --name cnn-vgg_cpu-seed1.")
@dask_options
def train_cnn(arch, epochs, batch_size, resume, data_path, out_dir, cache_dir, seed, train_subset, tta, params,
              arch_params, cell_name, dask_address, scatter):
    """Train a CNN on the training split, select its best epoch on the validation split, score it on the test split.

    Writes the record, the model (models/cnn-ARCH.zip, or NAME.zip), the test
    predictions and the training curves into --out; every epoch is checkpointed,
    so Ctrl-C loses at most the epoch in progress and --resume continues.  A
    cell the folder already holds is never trained over: --resume continues or
    re-scores it, --name trains another beside it.  Keras' progress goes to
    stderr; the result table to stdout.
    """
    import fer_deep

    from .data import load_dataset

    with user_errors(), naming_outputs(("--out", out_dir)):
        output_folder(out_dir, "--out", data=data_path, subfolders=(*RUN_FOLDERS, "checkpoints", "curves"))
        train_params = parse_params(params)
        arch_param_dict = parse_params(arch_params)
        from .experiment.deep_cell import cell_in_folder, check_cell_name, deep_cell_id, run_folder_arch

        try:
            name = check_cell_name(cell_name) if cell_name else deep_cell_id(run_folder_arch(arch, out_dir))
        except ValueError as error:
            raise UserError(f"--name: {error}") from None
        held = None if resume else cell_in_folder(out_dir, name)
        if held:
            raise UserError(f"{out_dir} already holds the cell {name} ({held}); add --resume to continue or re-score "
                            f"it, give --name to train another beside it, or remove {held} to train it again")
        fer_deep.require_keras()
        from fer_deep.training import check_parameters

        from .experiment.deep_cell import run_deep_cell

        try:
            check_parameters(arch, train_params, arch_param_dict)
        except ValueError as error:
            raise UserError(str(error)) from None
        dataset = load_dataset(data_path, cache_dir=cache_dir or default_cache_dir(), seed=seed)
        check_splits(dataset)
        if dask_address:  # the same call as a Dask task; its files come back here
            from .experiment.distributed import run_deep_cell_on_dask

            run_deep_cell = functools.partial(run_deep_cell_on_dask, dask_address, data_path=data_path,
                                              cache_dir=cache_dir or default_cache_dir(), scatter=scatter)
        # Keras prints its progress bar on stdout; stdout is for the result.
        with contextlib.redirect_stdout(sys.stderr):
            record = run_deep_cell(
                dataset, arch, out_dir,
                epochs=epochs or fer_deep.DEFAULT_EPOCHS[arch],
                batch_size=batch_size,
                seed=seed,
                resume=resume,
                train_subset=train_subset,
                log=lambda message: click.echo(message, err=True),
                tta=False if tta == "none" else tta,
                arch_params=arch_param_dict,
                cell=name,
                **train_params,
            )
    click.echo(format_records_table([record]))
    click.echo(f"model: {record['model_path']}", err=True)


@cli.command("explain")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.argument("image", type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default="explain", show_default=True,
              help="Folder for IMAGE-activations.png and IMAGE-gradcam.png.")
@click.option("--target", default=None, metavar="CLASS",
              help="Class whose Grad-CAM to draw [default: the predicted class].")
def explain(model_path, image, out_dir, target):
    """Show what a CNN sees in one face: activation maps of each block and a Grad-CAM heat map.

    IMAGE is a face crop in any image format and size (converted to a 48x48
    gray face).  Prints a JSON record with the prediction and the PNG paths.
    """
    import json

    from .data import read_face
    from .models import load_model

    with user_errors(), naming_outputs(("--out", out_dir)):
        if not image.is_file():
            raise UserError(f"{image}: no such image file")
        output_folder(out_dir, "--out")
        model = load_model(model_path)
        if getattr(model, "family", None) != "deep":
            raise UserError(f"{model_path}: a classical model; explain needs a CNN (train one with "
                            "`fer-bench train cnn`)")
        face = read_face(image)  # DatasetError naming the file if it cannot be decoded
        from fer_deep.explain import explain_face

        try:
            result = explain_face(model, face, out_dir, target=target, stem=image.stem)
        except ValueError as error:  # unknown --target class
            raise UserError(str(error)) from None
    click.echo(json.dumps({"image": str(image), "model": str(model_path), **result}, indent=2))


# --------------------------------------------------------------------------- predict


MODEL_SUFFIXES = (".skops", ".joblib", ".zip", ".onnx")
"""Suffixes of model files: a first argument of ``predict`` with one of them is the model, not an input."""


def model_and_inputs(model_option, paths) -> tuple:
    """The model (a name or path) and the inputs of ``predict``: ``--model`` or a first PATH naming a model file."""
    if model_option is None and paths and Path(paths[0]).suffix.lower() in MODEL_SUFFIXES:
        return str(paths[0]), tuple(paths[1:])
    from .models import default_model_name

    return (model_option if model_option is not None else default_model_name()), tuple(paths)


def check_predict_outputs(model_path, paths, json_path, csv_path, annotate_dir) -> None:
    """Before any work: --json and --csv are not an input, the model or each other; --annotate is outside the inputs."""
    from ._core import IMAGE_EXTENSIONS
    from .media import VIDEO_EXTENSIONS

    files = (("--json", json_path), ("--csv", csv_path))
    for option, path in files:
        if path is not None:
            output_file(path, option, inputs=paths, input_suffixes=IMAGE_EXTENSIONS | VIDEO_EXTENSIONS,
                        models=[model_path], others=[other for other in files if other[0] != option])
    if annotate_dir is not None:
        output_folder(annotate_dir, "--annotate", inputs=[path for path in paths if Path(path).is_dir()])


model_option = click.option(
    "--model", "model_name", default=None, metavar="NAME|PATH",
    help="A shipped model's name (see fer-bench models) or a model file [default: the shipped default model].")
trust_option = click.option(
    "--trust", is_flag=True,
    help="Allow a pickle (joblib) model file: loading one runs any code it holds, so only for files you trust.")


def face_options(command):
    """The face-finding options that predict and serve share."""
    for option in reversed([
        click.option("--detector", type=click.Choice(list(DETECTORS)), default=DEFAULT_DETECTOR,
                     show_default=True, help="Face detector."),
        click.option("--min-face", type=click.IntRange(min=1), default=DEFAULT_MIN_FACE, show_default=True,
                     metavar="N", help="Smallest face reported, in pixels."),
        click.option("--max-side", type=click.IntRange(min=64), default=DEFAULT_MAX_SIDE, show_default=True,
                     metavar="N", help="Larger photos and frames are searched downscaled to this longest side."),
    ]):
        command = option(command)
    return command


@cli.command("models")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
def models_command(as_json):
    """List the trained models that ship with fer-bench, with their PrivateTest figures."""
    import json

    from .models import shipped_models

    records = shipped_models()
    if as_json:
        click.echo(json.dumps(records, indent=1))
        return
    if not records:
        click.echo("no shipped model is installed", err=True)
        return
    rows = [("name", "family", "PrivateTest", "macro F1", "ms a face", "MB", "what it is")]
    for record in records:
        rows.append((record["name"] + (" (default)" if record.get("default") else ""), record["family"],
                     f"{record['accuracy']:.2%}", f"{record.get('f1_macro', float('nan')):.2%}",
                     f"{record.get('predict_ms_single', float('nan')):.2f}",
                     f"{record.get('bytes', 0) / 1e6:.1f}", record.get("description", "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@cli.command("export")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--format", "export_format", type=click.Choice(["onnx"]), default="onnx", show_default=True,
              help="File format.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Output file [default: MODEL with the format's suffix].")
def export(model_path, export_format, out):
    """Write a CNN (a Keras model file) as an ONNX file that ONNX Runtime runs without TensorFlow.

    The test-time augmentation, classes and provenance travel in the file's
    metadata; fer-bench predict and serve take the ONNX file as a model.
    """
    from .models import load_model

    target = out if out is not None else Path(model_path).with_suffix(".onnx")
    with user_errors(), naming_outputs(("--out", target)):
        output_file(target, "--out", models=[model_path])
        model = load_model(model_path)
        if getattr(model, "family", None) != "deep" or not hasattr(model, "model_"):
            raise UserError(f"{model_path}: not a Keras CNN file; export takes what `fer-bench train cnn` saves")
        from fer_deep.onnx_model import export_onnx

        try:
            path = export_onnx(model, target)
        except (ImportError, ValueError) as error:
            raise UserError(f"cannot export {model_path} to ONNX: {error}") from None
    click.echo(str(path))


@cli.command("predict")
@click.argument("paths", metavar="[MODEL] [PATH]...", nargs=-1, type=click.Path(path_type=Path))
@model_option
@trust_option
@click.option("--webcam", type=click.IntRange(min=0), default=None, metavar="INDEX",
              help="Also read the live camera INDEX (0: the first) until Ctrl-C or --max-frames.")
@face_options
@click.option("--every", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Process every N-th video frame.")
@click.option("--batch", "batch_size", type=click.IntRange(min=1), default=16, show_default=True, metavar="N",
              help="Video frames searched and classified together.")
@click.option("--redetect", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Videos and camera: search the whole frame every N-th processed frame and in between "
                   "follow each face near its last box (several times faster; a new face beside tracked "
                   "ones is found within N frames).  1: search every frame in full.")
@click.option("--max-frames", type=click.IntRange(min=1), default=None, metavar="N",
              help="Stop each video (and the camera) after N frames.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the JSON lines to this file instead of stdout.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the records as CSV to this file.")
@click.option("--annotate", "annotate_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              metavar="DIR", help="Write each photo and video with boxes and labels drawn under DIR.")
def predict(paths, model_name, trust, webcam, detector, min_face, max_side, every, batch_size, redetect, max_frames,
            json_path, csv_path, annotate_dir):
    """Find faces in photos, folders (recursively), videos or a camera, and classify their expressions.

    The model is --model (a shipped model's name or a file), or a first PATH
    that is a model file (.skops, .joblib, .zip, .onnx), or else the shipped
    default model.

    Prints one JSON line per face: file, frame and time (video), box
    [x, y, w, h] in original pixels, label, probabilities per class and
    valence (positive, neutral, negative).  A photo or frame without a face
    gets a record with a null face and a reason.  An input that cannot be
    read is reported on stderr and the others go on; the exit status is then 1.
    """
    from .predict import PredictOptions, RecordWriter, load_predict_model, predict_inputs

    options = PredictOptions(detector=detector, min_face=min_face, max_side=max_side, every=every,
                             batch_size=batch_size, max_frames=max_frames, redetect=redetect)
    outputs = (("--json", json_path), ("--csv", csv_path), ("--annotate", annotate_dir))
    with user_errors(), naming_outputs(*outputs):
        model_path, paths = model_and_inputs(model_name, paths)
        if not paths and webcam is None:
            raise click.UsageError("give at least one PATH (photo, video or folder) or --webcam INDEX")
        check_predict_outputs(model_path, paths, json_path, csv_path, annotate_dir)
        model = load_predict_model(model_path, trust=trust)
        with contextlib.ExitStack() as stack:
            json_stream = csv_stream = None
            if json_path is not None:
                json_stream = stack.enter_context(open(json_path, "w", encoding="utf-8"))
            elif csv_path is None:
                json_stream = sys.stdout
            if csv_path is not None:
                csv_stream = stack.enter_context(open(csv_path, "w", encoding="utf-8", newline=""))
            counts = predict_inputs(
                model, paths, webcam=webcam, options=options, annotate_dir=annotate_dir,
                emit=RecordWriter(model.classes_, json_stream=json_stream, csv_stream=csv_stream),
                warn=lambda message: click.echo(f"fer-bench: note: {message}", err=True),
                error=lambda message: click.echo(f"fer-bench: error: {message}", err=True),
            )
    summary = f"{counts['faces']} face(s) in {counts['inputs'] - counts['failed']} of {counts['inputs']} input(s)"
    if counts["frames"]:
        summary += f", {counts['frames']} video frame(s) processed"
    click.echo(f"fer-bench: {summary}", err=True)
    if counts["interrupted"]:
        sys.exit(interrupted_status())
    if counts["failed"]:
        click.echo(f"fer-bench: {counts['failed']} input(s) failed", err=True)
        sys.exit(1)


# --------------------------------------------------------------------------- serve


def _size_option(ctx, param, value):
    from .serve import parse_size

    try:
        return parse_size(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


@cli.command("serve")
@model_option
@trust_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; 0.0.0.0 makes the server reachable from other machines.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8000, show_default=True,
              help="Port to bind (0: any free port; the URL printed says which).")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, metavar="N",
              help="Prediction processes, each with the model loaded once.")
@click.option("--queue", type=click.IntRange(min=0), default=8, show_default=True, metavar="N",
              help="Predictions that may wait for a worker; more get 503 with Retry-After.")
@click.option("--max-upload", default="10MB", show_default=True, callback=_size_option, metavar="SIZE",
              help="Largest image accepted (e.g. 10MB, 512KB; a bare number is MB); larger get 413.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=None, metavar="N",
              help="Largest image in pixels, read from its header before decoding "
                   f"[default: {MAX_IMAGE_PIXELS / 1e6:.0f} million, the limit of predict and the datasets too].")
@face_options
def serve(model_name, trust, host, port, workers, queue, max_upload, max_pixels, detector, min_face, max_side):
    """Serve a web page and a JSON API that find faces and classify their expressions.

    \b
    GET  /              upload a photo, or turn on the camera
    POST /api/predict   multipart field 'image', or raw image bytes: the records of 'fer-bench predict'
    GET  /api/model     the model's name, classes and recorded scores
    GET  /healthz       liveness

    Runs on waitress (a production WSGI server) until Ctrl-C.  Each request
    logs its route, status, size and time on stderr, nothing it contains.
    """
    import logging

    from .predict import PredictOptions
    from .serve import ServeLimits, serve as run_server

    options = PredictOptions(detector=detector, min_face=min_face, max_side=max_side)
    limits = ServeLimits(workers=workers, queue=queue, max_upload=max_upload,
                         max_pixels=max_pixels or MAX_IMAGE_PIXELS)

    def ready(url):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        log = logging.getLogger("fer_bench.serve")
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        click.echo(f"fer-bench: serving {model_name} on {url} ({workers} worker(s), queue {queue}); Ctrl-C stops",
                   err=True)
        click.echo(url)

    with user_errors():
        if model_name is None:
            from .models import default_model_name

            model_name = default_model_name()
        try:
            run_server(model_name, host=host, port=port, limits=limits, options=options, trust=trust, ready=ready)
        except OSError as error:
            raise UserError(f"cannot serve on {host}:{port} ({error.strerror or error})") from None
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM while starting: how a server is stopped, not a failure
            pass
    # waitress returns from its loop on Ctrl-C (and SIGTERM, which user_errors turns into one)
    click.echo("fer-bench: server stopped", err=True)


if __name__ == "__main__":
    main()

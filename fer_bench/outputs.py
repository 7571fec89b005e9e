"""Where commands write, checked before any work, and file-system errors as one line naming the option.

Every command that writes files checks its outputs first, so a run that
could not save its results fails in a second rather than after the training:

- :func:`output_folder`: a folder option such as ``--out`` is not a file, not
  inside the data folder or an input folder, is created (with its parents)
  and a file can be written in it;
- :func:`output_file`: a file option such as ``predict --json`` is not a
  folder, not an input or the model of the same call, its folder exists and
  it can be written.

Whatever file-system error still happens while the command works,
:func:`naming_outputs` turns into one line naming the option and the path.
All of them raise :class:`OutputError`, which the command line shows as one
line with exit status 1.  This module imports nothing else of the project.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


class OutputError(Exception):
    """An output cannot be written; the message names the option and the path."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _resolved(path) -> Path:
    return Path(os.path.abspath(Path(path).expanduser())).resolve()


def _inside(path, folder) -> bool:
    """Whether ``path`` is ``folder`` or lies below it (links resolved; neither needs to exist)."""
    path, folder = _resolved(path), _resolved(folder)
    return path == folder or folder in path.parents


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return _resolved(a) == _resolved(b)


def _writable_folder(folder: Path) -> str | None:
    """None if a file can be created in ``folder``, else why not (``os.access`` cannot see read-only mounts)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        return _reason(error)
    return None


def output_folder(path, option: str, *, data=None, inputs=(), subfolders=(), create: bool = True) -> Path:
    """Check the output folder ``path`` given as ``option`` before any work; return it.

    Parameters
    ----------
    path : path
        The folder.
    option : str
        How the user gave it (``--out``, ``RUN_DIR``), for the messages.
    data : path or sequence of path, optional
        The dataset(s) of the same call: a folder ``path`` must not lie in
        (nor be), or a dataset file ``path`` must not be.
    inputs : sequence of path
        Input folders of the same call ``path`` must not lie in (what is
        written there would be read as input the next time).
    subfolders : sequence of str
        Folders the command writes into under ``path``: any that exists must
        be a folder that can be written.
    create : bool
        Create ``path`` and its parents if missing; else a missing folder is
        an error.

    Raises
    ------
    OutputError
        The folder is a file, lies inside the data or an input folder, cannot
        be created or cannot be written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: a file, not a folder; give a folder (it is created if missing).")
    datasets = [] if data is None else [data] if isinstance(data, (str, os.PathLike)) else list(data)
    for data in map(Path, datasets):
        if data.is_dir() and _inside(path, data):
            raise OutputError(f"{option} {path} is inside the data folder {data}; results written there would "
                              "mix with the dataset. Choose a folder outside it.")
        if data.is_file() and _same_file(path, data):
            raise OutputError(f"{option} {path} is the dataset file itself; choose another folder.")
    for folder in inputs:
        if Path(folder).is_dir() and _inside(path, folder):
            raise OutputError(f"{option} {path} is inside the input folder {folder}; what is written there would "
                              "be read as input the next time. Choose a folder outside it.")
    if not path.is_dir():
        if not create:
            raise OutputError(f"{option} {path}: no such folder.")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{option} {path}: the folder cannot be created ({_reason(error)}).") from None
    for folder in [path, *(path / name for name in subfolders)]:
        if folder != path and not folder.exists():
            continue
        if not folder.is_dir():
            raise OutputError(f"{option} {path}: {folder} is a file where a folder is written; move it away.")
        reason = _writable_folder(folder)
        if reason is not None:
            raise OutputError(f"{option} {path}: cannot write in {folder} ({reason}).")
    return path


def output_file(path, option: str, *, inputs=(), input_suffixes=(), models=(), others=()) -> Path:
    """Check the output file ``path`` given as ``option`` before any work; return it.

    Nothing is created and an existing file keeps its content.

    Parameters
    ----------
    path : path
        The file.
    option : str
        How the user gave it (``--json``, ``OUT``), for the messages.
    inputs : sequence of path
        Input files and folders of the same call: ``path`` must not be one of
        the files, nor a file with one of ``input_suffixes`` inside one of the
        folders (it would be read as an input).
    models : sequence of path
        Model files of the same call ``path`` must not be.
    others : sequence of (option, path)
        Other output files of the same call ``path`` must not be.

    Raises
    ------
    OutputError
        The path is a folder, an input, a model or another output of the same
        call, its folder is missing, or it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path}: a folder, not a file; give a file name.")
    for other_option, other in others:
        if other is not None and _same_file(path, other):
            raise OutputError(f"{option} {path} is also {other_option}; give each output its own file.")
    for model in models:
        if model is not None and Path(model).is_file() and _same_file(path, model):
            raise OutputError(f"{option} {path} is the model file of this command; writing it would destroy "
                              "the model. Choose another file name.")
    suffixes = {suffix.lower() for suffix in input_suffixes}
    for item in inputs:
        item = Path(item)
        if item.is_dir():
            if path.suffix.lower() in suffixes and _inside(path, item):
                raise OutputError(f"{option} {path} is inside the input folder {item} and would be read as an "
                                  "input. Choose another file name.")
        elif _same_file(path, item):
            raise OutputError(f"{option} {path} is an input of this command; writing it would destroy it. "
                              "Choose another file name.")
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"{option} {path}: the folder {folder} does not exist; create it or choose another path.")
    if not folder.is_dir():
        raise OutputError(f"{option} {path}: {folder} is not a folder.")
    if path.is_file():  # appending nothing changes nothing, and fails where writing would
        try:
            with open(path, "ab"):
                pass
        except OSError as error:
            raise OutputError(f"{option} {path}: cannot be written ({_reason(error)}).") from None
    elif not path.exists():
        reason = _writable_folder(folder)
        if reason is not None:
            raise OutputError(f"{option} {path}: cannot write in {folder} ({reason}).")
    return path


def describe_os_error(error: OSError, outputs=()) -> str:
    """One line for a file-system error: the option whose path holds the failing file, the file, the reason.

    ``outputs`` are ``(option, path)`` pairs.  An error without a file name
    keeps its own message.
    """
    if error.filename is None:
        return str(error)
    filename = os.fsdecode(error.filename)
    where = filename + (f" -> {os.fsdecode(error.filename2)}" if error.filename2 is not None else "")
    for option, path in outputs:
        if path is not None and _inside(filename, path):
            shown = "" if _resolved(filename) == _resolved(path) else f": {where}"
            return f"{option} {path}{shown}: {_reason(error)}"
    return f"{where}: {_reason(error)}"


@contextlib.contextmanager
def naming_outputs(*outputs):
    """Turn any :class:`OSError` of the block into an :class:`OutputError` of one line (:func:`describe_os_error`).

    ``outputs`` are ``(option, path)`` pairs of the command, e.g.
    ``("--out", out_dir)``.
    """
    try:
        yield
    except OSError as error:
        raise OutputError(describe_os_error(error, outputs)) from None

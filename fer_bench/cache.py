"""What the on-disk cache holds, and pruning it: ``fer-bench cache info`` and ``fer-bench cache clear``.

The cache folder (``--cache-dir``, ``$FER_BENCH_CACHE`` or ``~/.cache/fer-bench``)
holds two kinds of entries, both plain-array ``.npz`` files checked on load
(:func:`fer_bench._core.read_cached_arrays`):

- ``arrays-v<format>-<key>.npz``: decoded datasets (:mod:`fer_bench.data`);
- ``features/<feature>/<key>.npz``: extracted features
  (:func:`fer_classic.features.transform_faces`).

Earlier versions left ``arrays-v1-*.npz`` files and joblib pickles under
``features/joblib/``; they are never read now, and are listed ("earlier
formats") so they can be removed.  Only files of these kinds are counted or removed: anything else in
the folder (``--cache-dir`` pointed at the wrong place) is left alone, and no
symbolic link is followed.

A cached entry's modification time is refreshed when it is used, so
``clear --older-than DAYS`` removes what no run has used for that long.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from .data import CACHE_FORMAT

KINDS = {
    "datasets": "decoded datasets",
    "features": "extracted features",
    "stale": "earlier formats, never read",
    "unfinished": "unfinished writes",
}
"""Kind of cache file -> how ``cache info`` names it."""

_ARRAYS = re.compile(r"arrays-v(\d+)-[0-9a-f]+\.npz")
_FEATURE_ENTRY = re.compile(r"[0-9a-f]{32}\.npz")
_OLD_JOBLIB = "features/joblib/"  # joblib.Memory's pickles, written before the cache held arrays only


def _kind(relative: str) -> str | None:
    """The kind of the cache file at ``relative`` ("/"-separated, below the cache folder), or None if not ours."""
    parts = relative.split("/")
    name = parts[-1]
    if ".tmp" in name and (name.startswith("arrays-v") or parts[0] == "features"):
        return "unfinished"
    if relative.startswith(_OLD_JOBLIB) or relative == "features/.gitignore":  # joblib.Memory wrote both
        return "stale"
    if len(parts) == 1:
        match = _ARRAYS.fullmatch(name)
        if match:
            return "datasets" if int(match.group(1)) == CACHE_FORMAT else "stale"
        return None
    if len(parts) == 3 and parts[0] == "features" and _FEATURE_ENTRY.fullmatch(name):
        return "features"
    return None


def cache_files(root) -> tuple:
    """The cache's own files below ``root`` and the count of other files.

    Returns
    -------
    files : list of (path, kind, size in bytes, modification time)
    others : int
        Files in the folder that are not the cache's (left alone).
    """
    root = Path(root)
    files, others = [], 0
    if not root.is_dir():
        return files, others
    for folder, dirs, names in os.walk(root):  # does not follow links into other folders
        for name in names:
            path = Path(folder) / name
            relative = path.relative_to(root).as_posix()
            try:
                stat = path.lstat()
            except OSError:
                continue
            kind = _kind(relative) if path.is_file() and not path.is_symlink() else None
            if kind is None:
                others += 1
            else:
                files.append((path, kind, stat.st_size, stat.st_mtime))
    return files, others


def cache_info(root) -> dict:
    """What the cache at ``root`` holds, per kind: files, bytes, oldest and newest use (Unix times), as plain data."""
    root = Path(root)
    files, others = cache_files(root)
    kinds = {}
    for kind in KINDS:
        chosen = [entry for entry in files if entry[1] == kind]
        kinds[kind] = {"files": len(chosen), "bytes": sum(entry[2] for entry in chosen),
                       "oldest": min((entry[3] for entry in chosen), default=None),
                       "newest": max((entry[3] for entry in chosen), default=None)}
    mode = root.stat().st_mode & 0o777 if root.is_dir() else None
    return {"folder": str(root), "exists": root.is_dir(), "mode": None if mode is None else f"{mode:04o}",
            "kinds": kinds, "files": len(files), "bytes": sum(entry[2] for entry in files), "other_files": others}


def clear_cache(root, older_than_days: float | None = None, now: float | None = None) -> dict:
    """Remove the cache's files below ``root`` (only those not used for ``older_than_days`` days, if given).

    Folders the removal empties go too.  Returns what was removed and kept, as
    plain data; a file that cannot be removed is counted in ``failed``.
    """
    root = Path(root)
    files, others = cache_files(root)
    cutoff = None if older_than_days is None else (time.time() if now is None else now) - older_than_days * 86400
    removed = removed_bytes = failed = kept = 0
    for path, _, size, mtime in files:
        if cutoff is not None and mtime >= cutoff:
            kept += 1
            continue
        try:
            path.unlink()
            removed += 1
            removed_bytes += size
        except OSError:
            failed += 1
    features = root / "features"
    for folder, _, _ in sorted(os.walk(features), key=lambda entry: -len(entry[0])):  # deepest first
        try:
            Path(folder).rmdir()  # only when empty
        except OSError:
            pass
    return {"folder": str(root), "removed": removed, "removed_bytes": removed_bytes, "kept": kept,
            "failed": failed, "other_files": others}


def format_bytes(size: int) -> str:
    """``1536`` -> ``1.5 KB``."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"  # not reached


def format_info(info: dict) -> str:
    """``cache info``'s table."""
    if not info["exists"]:
        return f"cache: {info['folder']} (does not exist yet)"
    lines = [f"cache: {info['folder']} (mode {info['mode']})"]
    for kind, label in KINDS.items():
        entry = info["kinds"][kind]
        when = ""
        if entry["files"]:
            when = (f"  last used {time.strftime('%Y-%m-%d', time.localtime(entry['oldest']))}"
                    f" .. {time.strftime('%Y-%m-%d', time.localtime(entry['newest']))}")
        lines.append(f"  {label:<28} {entry['files']:>6} files {format_bytes(entry['bytes']):>10}{when}")
    lines.append(f"  {'total':<28} {info['files']:>6} files {format_bytes(info['bytes']):>10}")
    if info["other_files"]:
        lines.append(f"  {info['other_files']} other file(s) in the folder are not the cache's and are left alone")
    return "\n".join(lines)

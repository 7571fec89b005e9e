"""Progress lines and peak memory of a sweep's cells.

:class:`Progress` prints where a sweep is (the cell's number, a bar of the
cells done, the time the cell has run and, with a time estimate, the time
left); :class:`PeakMemory` measures a cell's resident memory while it runs.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Callable


# --------------------------------------------------------------------------- memory


def _rss_of(pid: int) -> int:
    """Resident bytes of process ``pid`` (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(pid: int) -> list:
    """Process ids below ``pid`` (Linux /proc), e.g. joblib's worker processes."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as stream:
                    children = [int(c) for c in stream.read().split()]
            except (OSError, ValueError):
                continue
            found.extend(children)
            queue.extend(children)
    return found


def _high_water_mark() -> int | None:
    """This process's peak resident bytes (VmHWM) since start or the last reset; None off Linux."""
    try:
        with open("/proc/self/status") as stream:
            for line in stream:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory while a block runs.

    Two figures, because neither alone is right:

    - ``peak_rss_bytes``: this process's exact high-water mark.  On Linux the
      kernel's mark is reset at the start (``/proc/self/clear_refs``), so it
      belongs to this block alone and counts native allocations (BLAS,
      TensorFlow) that ``tracemalloc`` cannot see.  Where the reset is not
      allowed it falls back to ``getrusage`` ``ru_maxrss``, a lifetime peak
      that only says how much the block raised it (``method`` says which).
    - ``peak_tree_rss_bytes``: this process plus its child processes (joblib
      workers that extract features or fit grid candidates), sampled every
      ``interval`` seconds, so short spikes between samples can be missed.

    ``start_rss_bytes`` is the resident size when the block began, so the
    block's own growth is ``peak_rss_bytes - start_rss_bytes``.
    """

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.result: dict = {}

    def __enter__(self):
        self._start = _rss_of(os.getpid())
        try:
            with open("/proc/self/clear_refs", "w") as stream:
                stream.write("5")  # 5: reset the peak RSS to the current RSS
            self._method = "VmHWM (kernel high-water mark, reset at cell start)"
        except OSError:
            self._method = "ru_maxrss (process lifetime peak; the reset is not available here)"
        self._tree_peak = self._start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        pid = os.getpid()
        while not self._stop.wait(self.interval):
            total = _rss_of(pid) + sum(_rss_of(child) for child in _descendants(pid))
            self._tree_peak = max(self._tree_peak, total)

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        peak = _high_water_mark() if self._method.startswith("VmHWM") else None
        if peak is None:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
        self.result = {
            "peak_rss_bytes": int(peak),
            "start_rss_bytes": int(self._start),
            "peak_tree_rss_bytes": int(max(self._tree_peak, peak)),
            "peak_memory_method": self._method,
        }
        return False


# --------------------------------------------------------------------------- progress


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """Progress lines for a sweep: which cell, its number out of the total, and how far the sweep is.

    Every line starts with the cell's number, a bar of the cells done so far,
    the cell's name and the time the cell has been running; the cell's own
    messages (feature extraction, fits, epochs) follow.
    """

    def __init__(self, total: int, log=print, width: int = 20, time_left=None):
        self.total = total
        self.log = log
        self.width = width
        self.time_left = time_left
        self.done = 0
        self.started = time.perf_counter()

    def bar(self) -> str:
        filled = round(self.width * self.done / self.total) if self.total else self.width
        return "#" * filled + "." * (self.width - filled)

    def prefix(self, number: int, name: str, cell_started: float | None = None) -> str:
        digits = len(str(self.total))
        clock = f" +{_clock(time.perf_counter() - cell_started)}" if cell_started is not None else ""
        return f"[{number:>{digits}}/{self.total} {self.bar()}] {name}{clock}"

    def cell_log(self, number: int, name: str) -> Callable:
        """A log function for cell ``number`` that prefixes each message with where the sweep is."""
        started = time.perf_counter()

        def log(message):
            message = str(message)
            if message.startswith(f"{name}: "):  # cells name themselves; the prefix already does
                message = message[len(name) + 2:]
            self.log(f"{self.prefix(number, name, started)}: {message}")

        return log

    def finish(self, number: int, name: str, message: str):
        self.done += 1
        left = ""
        if self.time_left is not None and self.done < self.total:
            left = f", about {_clock(self.time_left.seconds())} left"
        self.log(f"{self.prefix(number, name)}: {message} (sweep {self.done}/{self.total} done, "
                 f"{_clock(time.perf_counter() - self.started)} elapsed{left})")

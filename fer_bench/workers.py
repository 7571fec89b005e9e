"""Worker processes that die with their parent.

joblib's loky workers (feature extraction, model selection) outlive a parent
killed with SIGKILL: a worker busy fitting never reads the pipe that would tell
it, and goes on holding a core until its task ends.  :func:`install` makes
every loky pool that joblib starts in this process run :func:`watch_parent` in
each worker: a daemon thread that polls the worker's parent process id and
ends the worker as soon as its parent is gone (the worker is then adopted by
another process, so the id changes).  It works where ``prctl(PR_SET_PDEATHSIG)``
does not (macOS) and does not depend on which thread of the parent started the
worker.
"""

from __future__ import annotations

import os
import threading
import time

POLL_SECONDS = 0.5
"""How often a worker checks that its parent is alive: the longest an orphan runs on."""


def watch_parent(parent_pid: int, interval: float = POLL_SECONDS) -> None:
    """Run in a worker process: end it, at once, when process ``parent_pid`` is no longer its parent."""
    if os.getppid() != parent_pid:  # the parent died while this worker started
        os._exit(1)

    def watch():
        while True:
            time.sleep(interval)
            if os.getppid() != parent_pid:
                os._exit(1)  # ends every thread of the worker, also one inside a C extension's fit

    threading.Thread(target=watch, name="fer-bench-parent-watch", daemon=True).start()


_installed = False


def install() -> None:
    """Make joblib's ``loky`` backend (the default one) start its workers with :func:`watch_parent`.

    Registered under the name ``loky``, so ``Parallel(n_jobs=...)``, scikit-learn's
    ``n_jobs`` and ``Parallel(backend="loky")`` all get it; thread-based backends
    are untouched.  A pool given its own ``initializer`` keeps it.  Idempotent.
    """
    global _installed
    if _installed:
        return
    from joblib import register_parallel_backend
    from joblib.parallel import LokyBackend

    class ParentWatchedLokyBackend(LokyBackend):
        """loky workers that end when the process that started them dies."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if "initializer" not in self.backend_kwargs:
                self.backend_kwargs.update(initializer=watch_parent, initargs=(os.getpid(),))

    register_parallel_backend("loky", ParentWatchedLokyBackend)
    _installed = True

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
import sys
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


_abandoned: list = []  # one Event per call an interrupt left running, set when the call ends


def exit_leaving_calls(status: int) -> None:
    """End the process with ``status`` at once if a call abandoned by :func:`call_interruptibly` still runs.

    Files are flushed; the interpreter's shutdown is skipped, since it would
    free objects the call's C code is using (a crash on exit, seen with
    libsvm).  Worker processes end by themselves (:func:`watch_parent`).
    Returns when no abandoned call runs.
    """
    if not all(done.is_set() for done in _abandoned):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(status)


def call_interruptibly(function, *args, **kwargs):
    """``function(*args, **kwargs)``, run so that Ctrl-C and SIGTERM reach the caller while it runs.

    Python runs signal handlers in the main thread, between bytecodes: a C
    extension that holds the main thread for long (libsvm's fit behind
    scikit-learn's ``SVC``, minutes on the full data) delays Ctrl-C and
    SIGTERM until it returns.  Called from the main thread, this runs
    ``function`` in a daemon thread (libsvm, BLAS and OpenCV release the GIL)
    while the main thread waits in short steps, where the signal's
    exception is raised at once; the abandoned call ends with the process.
    Its return value or exception is passed on.  Elsewhere (a worker thread)
    it is a plain call.

    Only for work that starts no worker processes of its own: an abandoned
    call cannot stop them (joblib stops its workers when the interrupt
    unwinds through it, which needs the call in the main thread).  A process
    that stops while an abandoned call still runs must end with
    :func:`exit_leaving_calls`: the interpreter's normal shutdown frees
    memory the call's C code may still be reading.
    """
    if threading.current_thread() is not threading.main_thread():
        return function(*args, **kwargs)
    outcome = {}

    def target(done):
        try:
            outcome["value"] = function(*args, **kwargs)
        except BaseException as error:  # passed on to the caller below
            outcome["error"] = error
        finally:
            done.set()

    # Waited for through an Event: a Thread.join() that a signal interrupts may mark a running thread as
    # stopped (CPython 3.11), and the call's end must stay known.
    done = threading.Event()
    threading.Thread(target=target, args=(done,), name="fer-bench-call", daemon=True).start()
    try:
        while not done.wait(0.2):
            pass
    except BaseException:
        _abandoned.append(done)
        raise
    if "error" in outcome:
        raise outcome.pop("error")
    return outcome["value"]

"""``fer-bench serve``: a web page and a JSON API for photos and a live camera.

Flask answers the requests and waitress serves them (a production WSGI
server in pure Python: no compiler, no C extension, on every platform pip
reaches).  Predictions run in ``workers`` processes, each of which loads the
model once (one :func:`fer_bench.models.load_model` call) and keeps it for
every request it serves; a crash in native code (a decoder, dlib) takes one
worker down, which is restarted, not the server.

Endpoints::

    GET  /                 the page: upload a photo or turn on the camera
    GET  /static/<file>    its script and style (nothing comes from a CDN)
    POST /api/predict      multipart field "image", or raw bytes with an image/* content type
    GET  /api/model        the model's name, classes, recorded scores and the server's limits
    GET  /healthz          {"status": "ok", "admitted": N}: the server answers; N predictions running or waiting

``/api/predict`` answers ``{"records": [...], "width": W, "height": H}``
where the records are exactly those ``fer-bench predict`` prints for the
same file (:func:`fer_bench.predict.predict_array`).

What is refused, before any worker sees it: a body over ``max_upload`` (413),
a request without an image or with another content type (400, 415), bytes no
image header can be read from (415), a header announcing more than
``max_pixels`` (413, a decompression bomb is never decoded), and a request
that finds ``workers + queue`` predictions already admitted (503 with
``Retry-After``).  Bytes that pass but do not decode answer 400.

Nothing a visitor sends is written to disk: uploads are parsed in memory
(:class:`InMemoryRequest`, waitress's ``inbuf_overflow`` above the largest
body it accepts), and the log holds per request only the route, status,
size and time.
"""

from __future__ import annotations

import io
import logging
import math
import multiprocessing
import os
import signal
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from .media import image_kind
from .predict import (MAX_IMAGE_PIXELS, ImageTooLargeError, InputError, PredictOptions, check_image_size,
                      decode_image, image_header_size, predict_array)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_WORKERS = 1
DEFAULT_QUEUE = 8
DEFAULT_MAX_UPLOAD = 10_000_000
"""Largest image accepted, in bytes (10 MB)."""
MULTIPART_MARGIN = 64 * 1024
"""Room for a multipart body's boundaries and headers around an image of ``max_upload`` bytes."""
PREDICT_TIMEOUT = 120.0
"""Seconds a request waits for its prediction before it is answered 504."""
RETRY_AFTER = 1
"""Seconds a refused (503) client is asked to wait."""


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


STATIC_DIR = Path(__file__).with_name("serve_static")

logger = logging.getLogger("fer_bench.serve")


@dataclass
class ServeLimits:
    """What the server accepts and how much work it admits at once.

    Attributes
    ----------
    workers : int
        Prediction processes; each loads the model once.
    queue : int
        Predictions that may wait for a free worker; one more is answered 503.
    max_upload : int
        Largest image, in bytes; a larger upload is answered 413.
    max_pixels : int
        Largest image, in pixels, read from its header before decoding.
    """

    workers: int = DEFAULT_WORKERS
    queue: int = DEFAULT_QUEUE
    max_upload: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = MAX_IMAGE_PIXELS


class Refusal(Exception):
    """A request answered with an error status and a message that says what was wrong."""

    def __init__(self, status: int, message: str, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


# --------------------------------------------------------------------------- the worker processes

_WORKER: dict = {}


def _start_worker(model: str, trust: bool, options: PredictOptions, threads: int, barrier, parent_pid: int) -> None:
    """Initializer of a worker process: load the model once; a failure is kept and raised by each call.

    OpenCV, the BLAS libraries and an ONNX model get ``threads`` threads each,
    so that the workers together use the machine's cores without
    oversubscribing them.  ``trust`` allows a pickle (joblib) model file.
    The worker ends as soon as the server process ``parent_pid`` is gone,
    also when it was killed with SIGKILL and could not stop its pool
    (:func:`fer_bench.workers.watch_parent`).
    """
    from .workers import watch_parent

    watch_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops its workers
    _WORKER["barrier"] = barrier
    import cv2
    from threadpoolctl import threadpool_limits

    cv2.setNumThreads(threads)
    _WORKER["thread_limits"] = threadpool_limits(threads)  # in force for the life of the process
    _WORKER["options"] = options
    try:
        _WORKER["model"] = _load(model, trust=trust, threads=threads)
    except Exception as error:  # raised again by every task, so the server reports it in words
        _WORKER["error"] = error
        return
    # Load the detector and the landmark model now rather than in the first request.
    import numpy as np

    from .faces import five_point_predictor, get_detector

    get_detector(options.detector).detect(np.zeros((96, 96), np.uint8))
    five_point_predictor()
    _WORKER["model"].predict_proba(np.zeros((1, 48, 48), np.uint8))


def _load(model: str, *, trust: bool, threads: int):
    """The one place the server loads a model (a file, or a shipped model's name)."""
    from .models import load_model

    return load_model(model, trust=trust, threads=threads)


def _worker_model():
    if "error" in _WORKER:
        raise _WORKER["error"]
    return _WORKER["model"]


def _worker_info(name: str) -> dict:
    # Every worker waits here until all have come (each after loading the model), so the
    # start-up's tasks reach every worker, one each.
    _WORKER["barrier"].wait(timeout=PREDICT_TIMEOUT)
    return describe_model(_worker_model(), name)


def _worker_predict(data: bytes, source: str, max_pixels: int) -> dict:
    model = _worker_model()
    image = decode_image(data, source, max_pixels=max_pixels)
    records = predict_array(model, image, source=source, options=_WORKER["options"])
    return {"records": records, "width": int(image.shape[1]), "height": int(image.shape[0])}


def describe_model(model, name: str) -> dict:
    """What ``/api/model`` tells about a loaded model: name, family, classes and its recorded figures."""
    metadata = dict(getattr(model, "metadata", None) or {})
    family = getattr(model, "family", None)
    info = {"name": name, "family": family, "classes": [str(c) for c in model.classes_]}
    if family == "classic":
        info["features"], info["classifier"] = str(model.features), str(model.classifier)
    elif family == "deep":
        info["architecture"] = str(getattr(model, "arch", None) or metadata.get("architecture") or "")
    scores = metadata.get("scores")
    info["scores"] = {str(k): float(v) for k, v in scores.items()} if isinstance(scores, dict) else None
    for key in ("dataset", "trained"):
        value = metadata.get(key)
        info[key] = str(value) if value is not None else None
    return info


class WorkerPool:
    """``workers`` processes, each holding the model, that decode photos and predict on them.

    Starting the pool starts every worker and waits until each has loaded the
    model, so a missing or foreign model file fails here, with its message,
    and the first request does not pay for the loading.
    """

    def __init__(self, model, *, name: str | None = None, workers: int = DEFAULT_WORKERS,
                 options: PredictOptions | None = None, trust: bool = False):
        self.model = str(model)
        self.name = name or Path(self.model).stem  # a file's stem, or a shipped model's name as it is
        self.trust = bool(trust)
        self.workers = max(1, int(workers))
        self.options = options or PredictOptions()
        self._lock = threading.Lock()
        self.restarts = 0
        self._executor = self._start()
        try:
            self.info = self._warm(self._executor)
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            raise

    def _start(self) -> ProcessPoolExecutor:
        # spawn, not fork: the server process runs threads, and a forked copy of
        # a threaded process (or of one that imported TensorFlow) can deadlock.
        context = multiprocessing.get_context("spawn")
        threads = max(1, cpu_count() // self.workers)
        return ProcessPoolExecutor(max_workers=self.workers, mp_context=context, initializer=_start_worker,
                                   initargs=(self.model, self.trust, self.options, threads,
                                             context.Barrier(self.workers), os.getpid()))

    def _warm(self, executor) -> dict:
        # As many tasks as workers at once: the executor starts a process for each,
        # and the barrier in _worker_info keeps one worker from taking two.
        futures = [executor.submit(_worker_info, self.name) for _ in range(self.workers)]
        return [future.result() for future in futures][0]

    def predict(self, data: bytes, source: str, *, max_pixels: int, timeout: float = PREDICT_TIMEOUT) -> dict:
        """``{"records", "width", "height"}`` for one encoded photo; :class:`InputError` if it does not decode."""
        executor = self._executor
        try:
            return executor.submit(_worker_predict, data, source, max_pixels).result(timeout=timeout)
        except BrokenProcessPool:
            self._restart(executor)
            raise Refusal(500, "the worker stopped while predicting on this image; it has been restarted") from None
        except FutureTimeout:
            raise Refusal(504, f"no answer from the model within {timeout:.0f} s") from None

    def _restart(self, broken) -> None:
        with self._lock:
            if self._executor is broken:  # another request may have restarted it already
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._start()
                self.restarts += 1
                logger.warning("a worker process stopped; the pool was restarted (%d restart(s))", self.restarts)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- the web application


def _in_memory_request_class():
    from flask import Request

    class InMemoryRequest(Request):
        """A Flask request whose uploaded files stay in memory (Werkzeug spools large ones to a temporary file)."""

        def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
            return io.BytesIO()

    return InMemoryRequest


def create_app(pool, limits: ServeLimits | None = None):
    """The Flask application around ``pool`` (a :class:`WorkerPool`, or anything with ``predict`` and ``info``)."""
    from flask import Flask, g, jsonify, request, send_from_directory
    from werkzeug.exceptions import HTTPException

    limits = limits or ServeLimits()
    app = Flask(__name__, static_folder=None)
    app.request_class = _in_memory_request_class()
    app.config["MAX_CONTENT_LENGTH"] = limits.max_upload + MULTIPART_MARGIN
    app.json.sort_keys = False  # records keep predict's field order
    slots = threading.BoundedSemaphore(limits.workers + limits.queue)
    state = {"admitted": 0}
    state_lock = threading.Lock()

    def refusal_response(status: int, message: str, headers=None):
        response = jsonify({"error": message, "status": status})
        response.status_code = status
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    @app.before_request
    def start_clock():
        g.started = time.perf_counter()

    @app.after_request
    def log_request(response):
        # The route, not the path: a path is something the visitor sent.
        route = request.url_rule.rule if request.url_rule is not None else "(no route)"
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        logger.info("%s %s %d %d bytes in, %.1f ms", request.method, route, response.status_code,
                    request.content_length or 0, elapsed)
        return response

    @app.errorhandler(Refusal)
    def refused(error):
        return refusal_response(error.status, error.message, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error):
        if error.code == 413:
            return refusal_response(413, f"the upload is over the limit of {_megabytes(limits.max_upload)}")
        return refusal_response(error.code or 500, error.description or error.name)

    @app.errorhandler(Exception)
    def unexpected(error):
        # The traceback's frames only: an exception's message may quote what the visitor sent.
        logger.error("unexpected %s\n%s", type(error).__name__, "".join(traceback.format_tb(error.__traceback__)))
        return refusal_response(500, f"internal error ({type(error).__name__}); see the server's log")

    @app.get("/")
    def index():
        return send_from_directory(STATIC_DIR, "index.html", max_age=0)

    @app.get("/static/<path:name>")
    def static_file(name):
        return send_from_directory(STATIC_DIR, name, max_age=0)

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok", "model": pool.info["name"], "admitted": state["admitted"]})

    @app.get("/api/model")
    def model_info():
        return jsonify({**pool.info, "detector": pool.options.detector, "min_face": pool.options.min_face,
                        "max_side": pool.options.max_side, "workers": limits.workers, "queue": limits.queue,
                        "max_upload": limits.max_upload, "max_pixels": limits.max_pixels})

    @app.post("/api/predict")
    def predict():
        data, source = _uploaded_image(request, limits.max_upload)
        _check_header(data, source, limits.max_pixels)
        if not slots.acquire(blocking=False):
            raise Refusal(503, f"busy: {limits.workers} prediction(s) running and {limits.queue} waiting; "
                               f"retry in {RETRY_AFTER} s", {"Retry-After": str(RETRY_AFTER)})
        with state_lock:
            state["admitted"] += 1
        try:
            answer = pool.predict(data, source, max_pixels=limits.max_pixels)
        except InputError as error:
            raise Refusal(400, str(error)) from None
        finally:
            with state_lock:
                state["admitted"] -= 1
            slots.release()
        return jsonify(answer)

    return app


def _megabytes(n: int) -> str:
    return f"{n / 1e6:g} MB ({n:,} bytes)"


def _uploaded_image(request, max_upload: int):
    """``(bytes, name)`` of the image in a multipart field ``image`` or a raw ``image/*`` body; else a Refusal."""
    if request.content_length is not None and request.content_length > max_upload + MULTIPART_MARGIN:
        raise Refusal(413, f"the upload ({request.content_length:,} bytes) is over the limit of "
                           f"{_megabytes(max_upload)}")
    mimetype = request.mimetype or ""
    if mimetype == "multipart/form-data":
        upload = request.files.get("image")
        if upload is None:
            fields = sorted(set(request.files) | set(request.form))
            raise Refusal(400, "no file in the form field 'image'" + (f" (fields sent: {', '.join(fields)})"
                                                                       if fields else ""))
        data, source = upload.read(), (upload.filename or "upload")[:255]
    elif mimetype.startswith("image/") or mimetype == "application/octet-stream":
        data, source = request.get_data(cache=False), "upload"
    elif not mimetype:
        raise Refusal(415, "no Content-Type: send multipart/form-data with the field 'image', "
                           "or the image's bytes with an image/* content type")
    else:
        raise Refusal(415, f"content type {mimetype[:100]!r} is not accepted: send multipart/form-data with the "
                           "field 'image', or the image's bytes with an image/* content type")
    if len(data) > max_upload:
        raise Refusal(413, f"the image ({len(data):,} bytes) is over the limit of {_megabytes(max_upload)}")
    if not data:
        raise Refusal(400, "the image is empty (0 bytes)")
    return data, source


def _image_kind(data: bytes):
    """The format named by the file's first bytes (its magic number), as the messages spell it, or None."""
    kind = image_kind(data)
    return "WebP" if kind == "WEBP" else kind


def _check_header(data: bytes, source: str, max_pixels: int) -> None:
    """Refuse what has no readable image header (415) or announces too many pixels (413), before decoding."""
    size = image_header_size(data)
    if size is None:
        kind = _image_kind(data)
        if kind is not None:
            raise Refusal(400, f"{source}: a truncated or corrupt {kind} (its header cannot be read)")
        raise Refusal(415, f"{source}: not an image (no JPEG, PNG, BMP, GIF, TIFF or WebP header could be read)")
    try:
        check_image_size(source, size, max_pixels=max_pixels)
    except ImageTooLargeError as error:
        raise Refusal(413, str(error)) from None


# --------------------------------------------------------------------------- the server


def make_server(app, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: ServeLimits | None = None):
    """A waitress server for ``app``, bound but not yet running (``port=0``: a free port, ``server.effective_port``).

    Waitress reads each request's body into its buffer before the
    application sees it; bodies above the upload limit are refused there (413),
    and those below never spill into a temporary file.
    """
    from waitress import create_server

    limits = limits or ServeLimits()
    largest_body = limits.max_upload + MULTIPART_MARGIN
    return create_server(
        app, host=host, port=port,
        # Threads for the predictions admitted (running or waiting) and a few
        # more, so health checks and refusals are answered while all are busy.
        threads=limits.workers + limits.queue + 4,
        max_request_body_size=largest_body,
        inbuf_overflow=largest_body + 1,
        connection_limit=max(100, 4 * (limits.workers + limits.queue)),
        channel_timeout=60,
        ident="fer-bench",
    )


def serve(model, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, limits: ServeLimits | None = None,
          options: PredictOptions | None = None, trust: bool = False, name: str | None = None, ready=None) -> None:
    """Load the model (a file or a shipped model's name) in the workers, bind, call ``ready(url)``, serve until
    interrupted."""
    limits = limits or ServeLimits()
    pool = WorkerPool(model, name=name, workers=limits.workers, options=options, trust=trust)
    try:
        server = make_server(create_app(pool, limits), host=host, port=port, limits=limits)
        shown = f"[{host}]" if ":" in host else host
        if ready is not None:
            ready(f"http://{shown}:{server.effective_port}/")
        try:
            server.run()
        finally:
            server.close()
    finally:
        pool.close()


def parse_size(text) -> int:
    """Bytes from ``"10MB"``, ``"512KB"``, ``"2.5 MB"``, ``"1GB"`` or ``"800B"``; a bare number is megabytes."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmg]?b?)\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ValueError(f"{text!r} is not a size like 10MB, 512KB or 800B")
    unit = match.group(2).lower().rstrip("b") if match.group(2).lower() != "b" else "b"
    factor = {"": 1e6, "b": 1, "k": 1e3, "m": 1e6, "g": 1e9}[unit]
    size = int(math.floor(float(match.group(1)) * factor))
    if size < 1:
        raise ValueError(f"{text!r}: the size must be at least one byte")
    return size

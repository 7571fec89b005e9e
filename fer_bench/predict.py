"""Predict facial expressions on photos, folders, video files and a live camera.

Plain functions behind ``fer-bench predict``.  Every face found becomes one
record (a plain dict, one JSON line)::

    {"file": "party.jpg", "frame": null, "time": null, "face": 0,
     "box": [412, 80, 96, 96], "label": "happy", "valence": "positive",
     "probabilities": {"angry": 0.02, ...}, "reason": null}

``box`` is ``[x, y, width, height]`` in the original image's pixels; ``frame``
and ``time`` (seconds) are set for video.  A photo or processed frame without
a face still gets one record, with ``face``, ``box``, ``label`` null and a
``reason``.  An input that cannot be read raises :class:`InputError`, whose
message names it; :func:`predict_inputs` reports it and goes on with the rest.

The records (fields, drawing, writers) are made in :mod:`fer_bench.face_records`,
photos and videos read and written in :mod:`fer_bench.media`; this module
finds and classifies the faces and walks the inputs.

Importing this module imports neither TensorFlow nor Keras; a classical
model never needs them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._core import IMAGE_EXTENSIONS
# The records and the photo and video input/output live in their own modules; their names stay importable
# from here, where the command line, the server and the benchmarks import them.
from .face_records import (RECORD_FIELDS, VALENCE, RecordWriter, draw_records, face_record,  # noqa: F401
                           no_face_record)
from .faces import DEFAULT_DETECTOR, DEFAULT_MAX_SIDE, DEFAULT_MIN_FACE, find_faces_many, get_detector
from .media import (MAX_IMAGE_PIXELS, VIDEO_EXTENSIONS, ImageTooLargeError, InputError,  # noqa: F401
                    check_image_size, decode_image, image_header_size, open_camera, open_video, read_frames,
                    read_image, video_writer, write_image)
from .tracking import FaceTracker


@dataclass
class PredictOptions:
    """How faces are found and videos sampled.

    Attributes
    ----------
    detector : str
        Registry name in :data:`fer_bench.faces.DETECTORS`.
    min_face : int
        Smallest face reported, in pixels (detector box width).
    max_side : int
        Longest side of the image searched; larger photos and frames are searched downscaled.
    every : int
        Process every ``every``-th video frame.
    batch_size : int
        Video frames searched and classified together.
    max_frames : int or None
        Stop a video or the camera after this many frames read.
    redetect : int
        In videos and the camera, search the whole frame every ``redetect``-th
        processed frame and in between follow each face in a window around
        its last box (:class:`fer_bench.tracking.FaceTracker`); 1 searches
        every processed frame in full.
    max_pixels : int
        Photos with more pixels are refused.
    """

    detector: str = DEFAULT_DETECTOR
    min_face: int = DEFAULT_MIN_FACE
    max_side: int = DEFAULT_MAX_SIDE
    every: int = 1
    batch_size: int = 16
    max_frames: int | None = None
    redetect: int = 1
    max_pixels: int = MAX_IMAGE_PIXELS


# --------------------------------------------------------------------------- model


def load_predict_model(path, *, trust: bool = False):
    """Load a saved model by its content, or a shipped model by its name (:func:`fer_bench.models.load_model`).

    Keras is imported only for a Keras model file.
    """
    from .models import load_model

    return load_model(path, trust=trust)


# --------------------------------------------------------------------------- classifying


def _no_face_reason(options: PredictOptions, shape) -> str:
    detector = get_detector(options.detector)
    smallest = detector.effective_min_face(shape, min_face=options.min_face, max_side=options.max_side)
    return f"no face found by {options.detector} (faces at least {smallest} px wide)"


def classify_faces(model, faces_per_image, sources, *, shapes=None, frames=None, seconds=None, options=None) -> list:
    """Classify every face of several images in one ``predict_proba`` call; records per image.

    Parameters
    ----------
    model : ClassicModel or DeepModel
        Anything with ``predict_proba`` on (n, 48, 48) uint8 and ``classes_``.
    faces_per_image : list of list of Face
        From :func:`fer_bench.faces.find_faces_many`.
    sources : list of str
        The file name (or camera) of each image.
    shapes : list of tuple, optional
        Shape of each image, to word the no-face reason (the smallest face findable).
    frames, seconds : list, optional
        Frame index and time of each image, for video.
    options : PredictOptions
        Used to word the no-face reason.
    """
    options = options or PredictOptions()
    crops = [face.crop for faces in faces_per_image for face in faces]
    probabilities = model.predict_proba(np.stack(crops)) if crops else np.zeros((0, len(model.classes_)))
    out, position = [], 0
    for i, faces in enumerate(faces_per_image):
        frame = frames[i] if frames is not None else None
        second = seconds[i] if seconds is not None else None
        if not faces:
            shape = shapes[i] if shapes is not None else None
            reason = _no_face_reason(options, shape) if shape is not None else f"no face found by {options.detector}"
            out.append([no_face_record(sources[i], reason, frame=frame, seconds=second)])
            continue
        records = []
        for index, face in enumerate(faces):
            records.append(face_record(sources[i], index, face, probabilities[position], model.classes_,
                                       frame=frame, seconds=second))
            position += 1
        out.append(records)
    return out


def _classify_images(model, images, sources, options, *, frames=None, seconds=None, tracker=None) -> list:
    """Find, align and classify the faces of several images; one list of records per image.

    With a ``tracker`` (consecutive video frames), faces are found by it, in order.
    """
    if tracker is not None:
        found = tracker.find_many(images)
    else:
        found = find_faces_many(images, detector=options.detector, min_face=options.min_face,
                                max_side=options.max_side)
    return classify_faces(model, found, sources, shapes=[image.shape for image in images], frames=frames,
                          seconds=seconds, options=options)


# --------------------------------------------------------------------------- photos


def predict_array(model, image, *, source: str, options: PredictOptions | None = None) -> list:
    """Records for every face in one decoded photo (BGR, BGRA or gray array), or one no-face record.

    The photo path of ``fer-bench predict`` and the server's ``/api/predict``
    both end here, so they answer the same records for the same picture.
    """
    return _classify_images(model, [image], [source], options or PredictOptions())[0]


def predict_image(model, path, *, options: PredictOptions | None = None, source: str | None = None,
                  annotate_to=None, warn=None) -> list:
    """Records for every face in one photo (or one no-face record).

    Parameters
    ----------
    model : ClassicModel or DeepModel
        The expression model.
    path : path
        The photo.
    options : PredictOptions
        Detector and sizes.
    source : str, optional
        What the records call the file (default: ``str(path)``).
    annotate_to : path, optional
        Write the photo with boxes and labels drawn here.
    warn : callable, optional
        Receives notes (e.g. a huge photo searched downscaled).
    """
    options = options or PredictOptions()
    image = read_image(path, max_pixels=options.max_pixels)
    _note_downscale(path, image.shape, options, warn)
    records = predict_array(model, image, source=source or str(path), options=options)
    if annotate_to is not None:
        write_image(annotate_to, draw_records(image, records))
    return records


def _note_downscale(path, shape, options, warn):
    detector = get_detector(options.detector)
    smallest = detector.effective_min_face(shape, min_face=options.min_face, max_side=options.max_side)
    if warn is not None and smallest > options.min_face:
        warn(f"{path}: {shape[1]}x{shape[0]} pixels is searched downscaled (--max-side {options.max_side}); "
             f"faces narrower than {smallest} px may be missed")


# --------------------------------------------------------------------------- video


def predict_frames(model, frames, *, source: str, fps: float | None, options: PredictOptions | None = None,
                   annotate_to=None, warn=None, live: bool = False):
    """Records for a stream of frames; yields lists of records, one list per processed frame.

    Every ``options.every``-th frame is processed; up to ``options.batch_size``
    processed frames are searched and classified together (one frame at a
    time when ``live``).  With ``annotate_to`` every frame read is written to
    an mp4v video there, each showing the boxes of the latest processed frame,
    so the annotated video has the input's length and frame rate.
    """
    options = options or PredictOptions()
    every, batch_size = max(1, int(options.every)), 1 if live else max(1, int(options.batch_size))
    writer, shown = None, []
    pending, pending_frames = [], []  # (index, image) to process; every frame since the last flush
    noted = False
    start = time.monotonic()
    tracker = None
    if options.redetect > 1:
        tracker = FaceTracker(options.detector, redetect=options.redetect, min_face=options.min_face,
                              max_side=options.max_side)

    def flush():
        nonlocal writer, shown
        if not pending and not pending_frames:
            return []
        out = []
        if pending:
            indices, images, stamps = zip(*pending)
            records = _classify_images(model, list(images), [source] * len(images), options,
                                       frames=list(indices), seconds=list(stamps), tracker=tracker)
            out = records
            by_index = dict(zip(indices, records))
        else:
            by_index = {}
        if annotate_to is not None:
            for index, image in pending_frames:
                if writer is None:
                    writer = video_writer(annotate_to, fps or 30.0, image.shape)
                shown = by_index.get(index, shown)
                writer.write(draw_records(image, shown))
        pending.clear()
        pending_frames.clear()
        return out

    try:
        for index, image in enumerate(frames):
            if options.max_frames is not None and index >= options.max_frames:
                break
            if not noted:
                _note_downscale(source, image.shape, options, warn)
                noted = True
            if annotate_to is not None:
                pending_frames.append((index, image))
            if index % every == 0:
                stamp = time.monotonic() - start if live else (index / fps if fps else None)
                pending.append((index, image, stamp))
            # Bounded buffering: with annotation and a large --every, frames
            # between processed ones pile up; flush before they use much memory.
            if len(pending) >= batch_size or len(pending_frames) >= max(64, batch_size):
                yield from flush()
        yield from flush()
    finally:
        if writer is not None:
            writer.release()


def predict_video(model, path, *, options: PredictOptions | None = None, source: str | None = None,
                  annotate_to=None, warn=None):
    """Records for a video file; yields a list of records per processed frame (see :func:`predict_frames`).

    A video that ends before the frame count its header announces (a file cut
    short, a damaged stream) is said to ``warn``, with both numbers.
    """
    import cv2

    options = options or PredictOptions()
    capture = open_video(path)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and math.isfinite(fps) and fps > 0 else None
        announced = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        read = 0

        def counted():
            nonlocal read
            for frame in read_frames(capture):
                read += 1
                yield frame

        yield from predict_frames(model, counted(), source=source or str(path), fps=fps, options=options,
                                  annotate_to=annotate_to, warn=warn)
        stopped_early = options.max_frames is not None and read > options.max_frames
        if warn is not None and not stopped_early and short_video(read, announced):
            warn(f"{path}: the video ended after {read} of the {int(announced)} frames its header announces "
                 "(cut short or damaged); the records cover the frames read")
    finally:
        capture.release()


def short_video(read: int, announced: float) -> bool:
    """Whether ``read`` frames fall short of the ``announced`` count by more than its rounding.

    Containers that do not store a count make OpenCV estimate it from the
    duration and frame rate (it may then be a frame or about 1% off, or 0 when
    unknown), so only a larger shortfall counts.
    """
    if not math.isfinite(announced) or announced <= 0:
        return False
    return announced - read > max(1, announced / 100)


def predict_camera(model, index: int, *, options: PredictOptions | None = None, annotate_to=None, warn=None):
    """Records from a live camera, one frame at a time, until ``options.max_frames`` or Ctrl-C."""
    import cv2

    capture = open_camera(index)
    try:
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and math.isfinite(fps) and fps > 0 else 30.0
        try:
            yield from predict_frames(model, read_frames(capture), source=f"camera:{index}", fps=fps, options=options,
                                      annotate_to=annotate_to, warn=warn, live=True)
        except KeyboardInterrupt:  # the way to stop a live camera; what was written stays valid
            return
    finally:
        capture.release()


# --------------------------------------------------------------------------- many inputs


def expand_inputs(paths):
    """``[(file, kind, annotate_name), ...]`` for paths given: files as they are, folders searched recursively.

    ``kind`` is ``"image"``, ``"video"`` or ``"unknown"`` (a file named on the
    command line whose extension says neither: tried as a photo, then as a
    video).  Inside folders only files with a photo or video extension are
    taken.  A missing path is returned with kind ``"missing"``.
    """
    out = []
    for path in map(Path, paths):
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                kind = _kind(file)
                if kind != "unknown":
                    out.append((file, kind, Path(path.name or "input") / file.relative_to(path)))
        elif path.exists():
            out.append((path, _kind(path), Path(path.name)))
        else:
            out.append((path, "missing", Path(path.name)))
    return out


def _kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    return "unknown"


def _annotation_path(annotate_dir, name: Path, kind: str, source: Path, used: set) -> Path:
    suffix = name.suffix.lower()
    if kind == "video":
        name = name.with_suffix(".mp4")
    elif suffix not in {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}:
        name = name.with_suffix(".png")
    out = Path(annotate_dir) / name
    candidate, n = out, 0
    # Never overwrite the input itself, nor an annotation written earlier in this run.
    while candidate.resolve() in used or (candidate.exists() and candidate.resolve() == Path(source).resolve()):
        n += 1
        candidate = out.with_name(f"{out.stem}_annotated{n if n > 1 else ''}{out.suffix}")
    used.add(candidate.resolve())
    return candidate


def predict_inputs(model, paths, *, webcam: int | None = None, options: PredictOptions | None = None,
                   annotate_dir=None, emit=None, warn=None, error=None) -> dict:
    """Predict on every photo, video and folder in ``paths`` (and a camera), going on past bad inputs.

    Parameters
    ----------
    model : ClassicModel or DeepModel
        The expression model.
    paths : list of path
        Photos, videos and folders (searched recursively).
    webcam : int, optional
        Index of a live camera to read after the paths.
    options : PredictOptions
        Detector, face size, frame sampling.
    annotate_dir : path, optional
        Write annotated copies of photos and videos under this folder.
    emit : callable
        Called with each record.
    warn, error : callable
        Called with a note, or with the message of an input that failed.

    Returns
    -------
    dict
        ``inputs``, ``failed``, ``records``, ``faces``, ``frames`` counts, and
        ``interrupted`` (Ctrl-C while reading files; Ctrl-C on the camera just stops it).
    """
    options = options or PredictOptions()
    get_detector(options.detector)  # an unknown name fails here, before any input is read
    emit = emit or (lambda record: None)
    warn = warn or (lambda message: None)
    error = error or (lambda message: None)
    counts = {"inputs": 0, "failed": 0, "records": 0, "faces": 0, "frames": 0, "interrupted": False}
    used: set = set()

    def take(records):
        for record in records:
            emit(record)
            counts["records"] += 1
            counts["faces"] += record["face"] is not None

    try:
        for path, kind, name in expand_inputs(paths):
            counts["inputs"] += 1
            try:
                if kind == "missing":
                    raise InputError(f"{path}: no such file or folder")
                if kind == "unknown":
                    kind = _guess_kind(path)
                annotate_to = None
                if annotate_dir is not None:
                    annotate_to = _annotation_path(annotate_dir, name, kind, path, used)
                if kind == "image":
                    take(predict_image(model, path, options=options, annotate_to=annotate_to, warn=warn))
                else:
                    for records in predict_video(model, path, options=options, annotate_to=annotate_to, warn=warn):
                        counts["frames"] += 1
                        take(records)
            except InputError as failure:
                counts["failed"] += 1
                error(str(failure))
    except KeyboardInterrupt:
        # Records already emitted stay valid; an annotated video being
        # written is closed by its generator's cleanup and plays up to here.
        counts["interrupted"] = True
        warn("interrupted; the records so far are written")
        return counts
    if webcam is not None:
        counts["inputs"] += 1
        annotate_to = Path(annotate_dir) / f"camera{webcam}.mp4" if annotate_dir is not None else None
        try:
            for records in predict_camera(model, webcam, options=options, annotate_to=annotate_to, warn=warn):
                counts["frames"] += 1
                take(records)
        except InputError as failure:
            counts["failed"] += 1
            error(str(failure))
        except KeyboardInterrupt:  # Ctrl-C is how a live camera is stopped: not a failure
            warn(f"camera {webcam} stopped")
    return counts


def _guess_kind(path: Path) -> str:
    """A file whose extension says nothing: a photo if OpenCV knows its header, else a video if it opens as one."""
    import cv2

    try:
        if cv2.haveImageReader(str(path)):
            return "image"
    except cv2.error:
        pass
    try:
        open_video(path).release()
    except InputError as failure:
        if "empty file" in str(failure):
            raise
        raise InputError(f"{path}: neither an image nor a video OpenCV can decode") from None
    return "video"

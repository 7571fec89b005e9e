"""Photos and videos in and out for ``fer-bench predict`` and the server, with errors that name the input.

Decoding a photo checks its header against a pixel limit first
(:func:`decode_image`); videos and cameras open only when their first frame
decodes (:func:`open_video`, :func:`open_camera`); annotated copies are
written with :func:`write_image` and :func:`video_writer`.  Anything that
cannot be read or written raises :class:`InputError` naming it.  OpenCV and
Pillow are imported inside the functions.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"})
MAX_IMAGE_PIXELS = 150_000_000
"""Largest photo decoded (150 megapixels: 450 MB as BGR); larger ones are refused with a message."""


class InputError(Exception):
    """One input (file, folder or camera) could not be processed; the message names it."""


# --------------------------------------------------------------------------- photos


def image_header_size(source):
    """(width, height) from an image's header without decoding it; None if the format is unknown.

    ``source`` is a path or the file's bytes.  An image Pillow itself finds
    absurdly large (a decompression bomb) is reported as ``(inf, inf)``.
    """
    try:
        import warnings

        from PIL import Image
    except ImportError:
        return None
    if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
        import io

        source = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: we apply our own limit
            with Image.open(source) as image:
                return image.size
    except Image.DecompressionBombError:
        return (math.inf, math.inf)
    except Exception:  # not a format Pillow knows: OpenCV may still decode it
        return None


class ImageTooLargeError(InputError):
    """A photo whose header announces more pixels than the limit; refused before it is decoded."""


def check_image_size(name, size, *, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Raise :class:`ImageTooLargeError` naming ``name`` if ``size`` = (width, height) exceeds ``max_pixels``."""
    if size is not None and size[0] * size[1] > max_pixels:
        shown = "more than 178" if math.isinf(size[0]) else f"{size[0]}x{size[1]} = {size[0] * size[1] / 1e6:.0f}"
        raise ImageTooLargeError(
            f"{name}: image too large ({shown} megapixels; the limit is {max_pixels / 1e6:.0f}); downscale it first"
        )


def _read_bytes(path: Path) -> np.ndarray:
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except IsADirectoryError:
        raise InputError(f"{path}: a folder where a file was expected") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    return data


def decode_image(data, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode an encoded photo (bytes or a uint8 array) to a BGR array; :class:`InputError` naming ``name``.

    The header's dimensions are checked against ``max_pixels`` before anything is decoded.
    """
    import cv2

    data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if data.size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    check_image_size(name, image_header_size(data), max_pixels=max_pixels)
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as error:  # OpenCV refuses images above its own pixel limit this way
        raise InputError(f"{name}: cannot be decoded ({str(error).strip().splitlines()[-1]})") from None
    if image is None:
        raise InputError(f"{name}: not an image OpenCV can decode (corrupt, truncated or another kind of file)")
    return image


def read_image(path, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a photo to a BGR (or gray) array; :class:`InputError` naming the file if it cannot be."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return decode_image(_read_bytes(path), str(path), max_pixels=max_pixels)


def write_image(path, image):
    """Write ``image`` to ``path`` (folders are made); :class:`InputError` if OpenCV cannot."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise InputError(f"{path}: the annotated image could not be written")


# --------------------------------------------------------------------------- video


def _quiet_opencv():
    """Keep OpenCV's and FFmpeg's own warnings (e.g. on a file that is not a video) off stderr; we report in words."""
    import cv2

    try:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
    except AttributeError:
        pass
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def open_video(path):
    """An opened ``cv2.VideoCapture`` whose first frame decodes; :class:`InputError` naming the file otherwise."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        raise InputError(f"{path}: a folder where a file was expected")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    _quiet_opencv()
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise InputError(f"{path}: the video could not be opened (damaged, or a codec OpenCV's FFmpeg lacks)")
    ok, frame = capture.read()
    if not ok or frame is None:
        capture.release()
        raise InputError(f"{path}: the video opened but no frame could be decoded (damaged, or an unsupported codec)")
    capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return capture


def video_writer(path, fps: float, shape):
    """An opened mp4v ``cv2.VideoWriter`` for frames of ``shape``; :class:`InputError` if it cannot be."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (shape[1], shape[0]))
    if not writer.isOpened():
        raise InputError(f"{path}: the annotated video could not be written (mp4v)")
    return writer


def read_frames(capture):
    """The frames of an opened capture, until it has none."""
    while True:
        ok, frame = capture.read()
        if not ok or frame is None:
            return
        yield frame


def open_camera(index: int):
    """An opened camera whose first frame arrives; :class:`InputError` if there is no such camera."""
    import cv2

    _quiet_opencv()
    capture = cv2.VideoCapture(int(index))
    ok = capture.isOpened()
    if ok:
        ok, frame = capture.read()
        ok = ok and frame is not None
    if not ok:
        capture.release()
        raise InputError(f"camera {index}: could not be opened (no such camera, in use, or no permission)")
    return capture

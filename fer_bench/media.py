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

from ._core import MAX_IMAGE_PIXELS  # noqa: F401  (the one limit of the datasets, predict and serve; importable here)

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".avi", ".mov", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".gif"})


class InputError(Exception):
    """One input (file, folder or camera) could not be processed; the message names it."""


# --------------------------------------------------------------------------- photos


SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF87a", "GIF"), (b"GIF89a", "GIF"),
              (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))
"""Leading bytes (magic numbers) of the common image formats and Pillow's name for each (WebP: :func:`image_kind`)."""


def image_kind(data: bytes) -> str | None:
    """The image format a file's first bytes name (Pillow's name: JPEG, PNG, GIF, BMP, TIFF, WEBP), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((kind for signature, kind in SIGNATURES if data.startswith(signature)), None)


def image_header_size(source):
    """(width, height) from an image's header without decoding it; None if the format is unknown.

    ``source`` is a path or the file's bytes.  An image Pillow itself finds
    absurdly large (a decompression bomb) is reported as ``(inf, inf)``.  A
    file whose first bytes name its format (:func:`image_kind`) is read by
    that format's plugin first (a fifth of the time of trying every plugin: it
    counts when a dataset of 35,887 faces is decoded).
    """
    try:
        import warnings

        from PIL import Image
    except ImportError:
        return None
    if isinstance(source, (bytes, bytearray, memoryview, np.ndarray)):
        import io

        source = io.BytesIO(bytes(source))
    else:
        source = Path(source)
    if isinstance(source, Path):
        try:
            with open(source, "rb") as stream:
                head = stream.read(12)
        except OSError:
            return None
    else:
        head = source.getvalue()[:12]
    hint = image_kind(head)
    for formats in ([[hint], None] if hint else [None]):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # DecompressionBombWarning (we apply our own limit), corrupt EXIF
                with Image.open(source, formats=formats) as image:
                    return image.size
        except Image.DecompressionBombError:
            return (math.inf, math.inf)
        except Exception:  # not this format, or none Pillow knows: OpenCV may still decode it
            if not isinstance(source, Path):
                source.seek(0)
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


def read_bytes(path: Path) -> np.ndarray:
    """The bytes of a file as a uint8 array; :class:`InputError` naming it if it is empty or cannot be read."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except IsADirectoryError:
        raise InputError(f"{path}: a folder where a file was expected") from None
    except OSError as error:
        raise InputError(f"{path}: cannot be read ({error.strerror or error})") from None
    if data.size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    return data


JPEG_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
"""JPEG markers without a length field (TEM, RST0-7); the others before the first scan carry one."""


def jpeg_truncated(data: bytes) -> bool:
    """Whether a JPEG file ends before its image does: no end-of-image marker after its first scan.

    The marker segments are walked from the start, so an Exif thumbnail (a
    whole JPEG inside a segment, with its own end marker) is stepped over;
    after the first start-of-scan the end-of-image marker ``FF D9`` is
    searched: entropy-coded data cannot hold it (a 0xFF byte there is
    followed by 0x00 or a restart marker).  Whatever follows a whole image (a
    phone's motion-photo video, a maker's trailer) does not matter, as it does
    with the last-bytes test a cut file would otherwise need.
    """
    position = 2  # after the start-of-image marker
    while True:
        while position < len(data) and data[position] == 0xFF and position + 1 < len(data) \
                and data[position + 1] == 0xFF:  # fill bytes
            position += 1
        if position + 1 >= len(data):
            return True  # the file ends between segments, before any scan
        if data[position] != 0xFF:
            return False  # not a marker: malformed rather than cut; OpenCV's decoder has the last word
        marker = data[position + 1]
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", position + 2) < 0
        if marker == 0xD9:
            return False  # an end marker before any scan: no image to cut
        if marker in JPEG_STANDALONE_MARKERS:
            position += 2
            continue
        if position + 4 > len(data):
            return True
        position += 2 + int.from_bytes(data[position + 2:position + 4], "big")


def decode_image(data, name: str, *, max_pixels: int = MAX_IMAGE_PIXELS, flags=None) -> np.ndarray:
    """Decode an encoded photo (bytes or a uint8 array) to a BGR array; :class:`InputError` naming ``name``.

    The header's dimensions are checked against ``max_pixels`` before anything
    is decoded.  A truncated JPEG is refused (:func:`jpeg_truncated`): OpenCV
    would decode the part that is there and fill the rest with gray, without
    a word.  The datasets, ``fer-bench predict`` and the server all decode
    here, so all three refuse it: faces in the missing part would be reported
    as "no face", and a face across the cut classified from a half-gray crop,
    with nothing in the records to tell which.  ``flags`` are OpenCV's
    ``imdecode`` flags (default ``IMREAD_COLOR``; the datasets read
    ``IMREAD_UNCHANGED``).
    """
    import cv2

    data = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    if data.size == 0:
        raise InputError(f"{name}: empty file (0 bytes)")
    check_image_size(name, image_header_size(data), max_pixels=max_pixels)
    if image_kind(data[:12].tobytes()) == "JPEG" and jpeg_truncated(data.tobytes()):
        raise InputError(f"{name}: truncated JPEG (it has no end-of-image marker)")
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR if flags is None else flags)
    except cv2.error as error:  # OpenCV refuses images above its own pixel limit this way
        raise InputError(f"{name}: cannot be decoded ({str(error).strip().splitlines()[-1]})") from None
    if image is None:
        raise InputError(f"{name}: not an image OpenCV can decode (corrupt, truncated or another kind of file)")
    return image


def read_image(path, *, max_pixels: int = MAX_IMAGE_PIXELS, flags=None) -> np.ndarray:
    """Decode a photo to a BGR (or gray) array; :class:`InputError` naming the file if it cannot be."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    return decode_image(read_bytes(path), str(path), max_pixels=max_pixels, flags=flags)


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

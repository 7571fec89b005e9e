"""Benchmark the face detectors on real photos: missed faces, false faces and time an image.

The test set is built here from images that install with scikit-image and
matplotlib (nothing downloads), plus FER-2013 PublicTest faces when the data is
there:

- **faces** (each with its face box): the astronaut, the cameraman and Grace
  Hopper as they are; the astronaut and Grace Hopper placed on a 640x480 photo
  background at face widths of 50 to 240 px, turned 20 and 35 degrees either
  way, and partly covered (a bar over the eyes, the mouth and chin covered,
  the left half covered); FER-2013 PublicTest faces enlarged to 96 and 192 px
  on a padded canvas;
- **non-faces**: every other photo in ``skimage.data`` (a cat, coffee, a
  rocket, coins, a page of text, textures, ...), charts drawn with matplotlib
  (bars, lines, scatter, pie, a heat map, a table of numbers), and drawings of
  faces (smileys and a cartoon face, as an emoji or a sketch would be).

A detection counts as a found face when its centre lies within half a face
width of a true face's centre and its width is within a factor 2; every other
detection is a false face.  Each detector runs as ``fer-bench predict`` runs
it (``--min-face``, default 48 as in ``predict``); the false-face
filter is measured at each confidence threshold in ``--thresholds``.

Run::

    python benchmarks/bench_detectors.py [--data ../shared/data/fer2013] [--fer-faces 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CANVAS = (480, 640)
# Face centre (x, y) and width in the original photos, from dlib-cnn's box
# checked by eye.
PORTRAITS = {
    "astronaut": ((222.0, 110.0), 100.0),
    "grace_hopper": ((262.0, 232.0), 185.0),
    "cameraman": ((226.0, 153.0), 71.0),
}


def _gray(image):
    import cv2

    if image.ndim == 3:
        return cv2.cvtColor(image[..., :3].astype(np.uint8), cv2.COLOR_RGB2GRAY)
    return image.astype(np.uint8)


def _portraits() -> dict:
    import matplotlib
    import skimage.data
    import skimage.io

    hopper = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data", "grace_hopper.jpg")
    return {
        "astronaut": _gray(skimage.data.astronaut()),
        "grace_hopper": _gray(skimage.io.imread(hopper)),
        "cameraman": _gray(skimage.data.camera()),
    }


def _background() -> np.ndarray:
    import cv2
    import skimage.data

    return cv2.resize(_gray(skimage.data.coffee()), CANVAS[::-1], interpolation=cv2.INTER_AREA)


def _place(photo, centre, width, target_width, at=(320, 240)):
    """``photo`` scaled so its face is ``target_width`` wide, pasted on the background with the face at ``at``."""
    import cv2

    scale = target_width / width
    small = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    canvas = _background().copy()
    cx, cy = centre[0] * scale, centre[1] * scale
    ox, oy = int(round(at[0] - cx)), int(round(at[1] - cy))
    h, w = small.shape
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + w, CANVAS[1]), min(oy + h, CANVAS[0])
    canvas[y0:y1, x0:x1] = small[y0 - oy : y1 - oy, x0 - ox : x1 - ox]
    return canvas, (float(at[0]), float(at[1]), float(target_width))


def _rotate(photo, centre, width, degrees):
    import cv2

    h, w = photo.shape
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    rotated = cv2.warpAffine(photo, matrix, (w, h), borderMode=cv2.BORDER_REFLECT)
    cx, cy = matrix @ np.array([centre[0], centre[1], 1.0])
    return rotated, (float(cx), float(cy), float(width))


def _cover(photo, centre, width, part):
    covered = photo.copy()
    cx, cy = centre
    half = width / 2
    if part == "eyes":  # a dark bar, as sunglasses
        y0, y1, x0, x1 = cy - 0.30 * width, cy - 0.05 * width, cx - half, cx + half
        value = 20
    elif part == "mouth":  # the lower face behind a hand-coloured patch
        y0, y1, x0, x1 = cy + 0.15 * width, cy + 0.70 * width, cx - half, cx + half
        value = 170
    else:  # the left half of the face
        y0, y1, x0, x1 = cy - 0.8 * width, cy + 0.8 * width, cx - 0.7 * width, cx
        value = 90
    y0, y1, x0, x1 = (int(round(v)) for v in (y0, y1, x0, x1))
    covered[max(y0, 0) : y1, max(x0, 0) : x1] = value
    return covered, (float(cx), float(cy), float(width))


def _fer_faces(data, count: int) -> list:
    import cv2

    from fer_bench.data import read_face

    files = sorted(Path(data, "test").glob("*/PublicTest_*.jpg"))
    rng = np.random.default_rng(0)
    chosen = [files[i] for i in sorted(rng.choice(len(files), size=min(count, len(files)), replace=False))]
    out = []
    for path in chosen:
        face = read_face(path)
        if face is None:
            continue
        for size in (96, 192):
            big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
            pad = size // 2
            canvas = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
            # A FER-2013 crop runs from the brows to the chin: its face box is
            # about the crop's width, centred a little below its middle.
            out.append((f"fer/{path.stem}@{size}", canvas, [(pad + size / 2, pad + size * 0.55, size * 0.9)]))
    return out


def face_images(data=None, fer_count: int = 40) -> list:
    """``[(name, gray image, [(cx, cy, width), ...]), ...]`` of images that hold faces."""
    out = []
    photos = _portraits()
    for name, photo in photos.items():
        centre, width = PORTRAITS[name]
        out.append((f"{name}", photo, [(*centre, width)]))
    for name in ("astronaut", "grace_hopper"):
        photo, (centre, width) = photos[name], PORTRAITS[name]
        for target in (50, 70, 100, 160, 240):
            image, truth = _place(photo, centre, width, target)
            out.append((f"{name}/width{target}", image, [truth]))
        for degrees in (-35, -20, 20, 35):
            image, truth = _rotate(photo, centre, width, degrees)
            out.append((f"{name}/tilt{degrees:+d}", image, [truth]))
        for part in ("eyes", "mouth", "left_half"):
            image, truth = _cover(photo, centre, width, part)
            out.append((f"{name}/covered_{part}", image, [truth]))
    if data is not None and Path(data, "test").is_dir():
        out += _fer_faces(data, fer_count)
    return out


def _charts() -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(1)
    out = []
    for kind in ("bar", "line", "scatter", "pie", "heatmap", "table"):
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
        if kind == "bar":
            ax.bar(["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"], rng.uniform(0.3, 0.9, 7))
        elif kind == "line":
            ax.plot(np.cumsum(rng.normal(size=(100, 3)), axis=0))
        elif kind == "scatter":
            ax.scatter(*rng.normal(size=(2, 200)), c=rng.uniform(size=200))
        elif kind == "pie":
            ax.pie(rng.uniform(1, 3, 5), labels=list("ABCDE"))
        elif kind == "heatmap":
            ax.imshow(rng.uniform(size=(7, 7)), cmap="Blues")
        else:
            ax.axis("off")
            ax.table(cellText=np.round(rng.uniform(size=(8, 5)), 3).astype(str).tolist(), loc="center")
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3]
        plt.close(fig)
        out.append((f"chart/{kind}", _gray(image)))
    return out


def _drawings() -> list:
    import cv2

    out = []
    for variant in range(3):
        canvas = np.full(CANVAS, 255, np.uint8)
        centre, radius = (320, 240), 150 - 30 * variant
        cv2.circle(canvas, centre, radius, 200, -1)  # the yellow disc of an emoji, in gray
        cv2.circle(canvas, centre, radius, 60, 4)
        for dx in (-radius // 3, radius // 3):
            cv2.ellipse(canvas, (centre[0] + dx, centre[1] - radius // 4), (radius // 10, radius // 6), 0, 0, 360, 30, -1)
        cv2.ellipse(canvas, (centre[0], centre[1] + radius // 6), (radius // 2, radius // 3), 0, 20, 160, 30, 6)
        out.append((f"drawing/smiley{variant}", canvas))
    sketch = np.full(CANVAS, 255, np.uint8)  # a line drawing of a face
    cv2.ellipse(sketch, (320, 240), (110, 150), 0, 0, 360, 0, 3)
    for dx in (-45, 45):
        cv2.ellipse(sketch, (320 + dx, 200), (25, 12), 0, 0, 360, 0, 3)
        cv2.circle(sketch, (320 + dx, 200), 7, 0, -1)
        cv2.line(sketch, (320 + dx - 30, 170), (320 + dx + 30, 165), 0, 4)
    cv2.line(sketch, (320, 215), (305, 275), 0, 3)
    cv2.line(sketch, (305, 275), (330, 280), 0, 3)
    cv2.ellipse(sketch, (320, 315), (45, 15), 0, 0, 180, 0, 3)
    out.append(("drawing/sketch", sketch))
    return out


def non_face_images() -> list:
    """``[(name, gray image), ...]`` of images that hold no human face."""
    import matplotlib
    import skimage.data
    import skimage.io

    names = ["brick", "cat", "coffee", "coins", "colorwheel", "grass", "gravel", "horse", "hubble_deep_field",
             "immunohistochemistry", "logo", "moon", "page", "rocket", "text", "checkerboard", "clock", "retina"]
    out = []
    for name in names:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - an image this skimage version lacks or would download
            continue
        image = np.asarray(image)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        out.append((f"photo/{name}", _gray(image)))
    sample = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    for name in ("Minduka_Present_Blue_Pack.png", "logo2.png"):
        image = skimage.io.imread(os.path.join(sample, name))
        if image.dtype != np.uint8:
            image = (np.clip(image, 0, 1) * 255).astype(np.uint8)
        out.append((f"drawing/{name.split('.')[0]}", _gray(image)))
    return out + _charts() + _drawings()


def _matches(box, truth) -> bool:
    x, y, w, h = box[:4]
    cx, cy = x + w / 2, y + h / 2
    tx, ty, tw = truth
    return abs(cx - tx) <= tw / 2 and abs(cy - ty) <= tw / 2 and 0.5 <= w / tw <= 2.0


def score(detections, faces, non_faces, threshold=None) -> dict:
    """Missed and false faces of ``detections`` (one list of boxes per image, faces first)."""
    found = missed = false = false_images = 0
    for (name, _, truths), boxes in zip(faces, detections[: len(faces)]):
        boxes = [b for b in boxes if threshold is None or b[4] >= threshold]
        hit = [any(_matches(b, t) for b in boxes) for t in truths]
        found += sum(hit)
        missed += len(hit) - sum(hit)
        extra = [b for b in boxes if not any(_matches(b, t) for t in truths)]
        false += len(extra)
        false_images += bool(extra)
    for (name, _), boxes in zip(non_faces, detections[len(faces):]):
        boxes = [b for b in boxes if threshold is None or b[4] >= threshold]
        false += len(boxes)
        false_images += bool(boxes)
    return {"faces": found + missed, "found": found, "missed": missed, "false_faces": false,
            "images_with_false_faces": false_images, "images": len(faces) + len(non_faces)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.environ.get("FER_BENCH_DATA"), help="FER-2013 folder (optional).")
    parser.add_argument("--fer-faces", type=int, default=40, help="FER-2013 PublicTest faces to add (two sizes each).")
    parser.add_argument("--detectors", default="haar,dlib-hog,dlib-cnn")
    parser.add_argument("--thresholds", default="0,0.2,0.4,0.6", help="confidence thresholds for the dlib-hog filter")
    parser.add_argument("--min-face", type=int, default=48, help="smallest face searched for, px (predict's default)")
    parser.add_argument("--json", dest="json_out", default=None)
    args = parser.parse_args(argv)

    import cv2
    from threadpoolctl import threadpool_limits

    from fer_bench.faces import get_detector

    cv2.setNumThreads(1)
    faces = face_images(args.data, args.fer_faces)
    non_faces = non_face_images()
    images = [image for _, image, _ in faces] + [image for _, image in non_faces]
    print(f"{len(faces)} images with faces, {len(non_faces)} without", file=sys.stderr)
    results = {"images": {"faces": [n for n, _, _ in faces], "non_faces": [n for n, _ in non_faces]}, "detectors": {}}
    for name in args.detectors.split(","):
        detector = get_detector(name)
        detector.detect(images[0], min_face=args.min_face)  # loads the model
        detections, seconds = [], []
        with threadpool_limits(1):
            for image in images:
                start = time.perf_counter()
                detections.append(detector.detect(image, min_face=args.min_face))
                seconds.append(time.perf_counter() - start)
        row = score(detections, faces, non_faces)
        row["ms_per_image_median"] = 1000 * float(np.median(seconds))
        row["missed_images"] = [n for (n, _, t), boxes in zip(faces, detections)
                                if not all(any(_matches(b, x) for b in boxes) for x in t)]
        row["false_face_images"] = [n for (n, _, t), boxes in zip(faces, detections)
                                    if any(not any(_matches(b, x) for x in t) for b in boxes)]
        row["false_face_images"] += [n for (n, _), boxes in zip(non_faces, detections[len(faces):]) if boxes]
        row["scores_of_false_faces"] = sorted(
            round(b[4], 3) for (n, _, t), boxes in zip(faces, detections) for b in boxes if not any(_matches(b, x) for x in t)
        ) + sorted(round(b[4], 3) for boxes in detections[len(faces):] for b in boxes)
        if name == "dlib-hog":
            row["threshold"] = {t: score(detections, faces, non_faces, float(t)) for t in args.thresholds.split(",")}
        results["detectors"][name] = row
        print(f"{name:9s} found {row['found']}/{row['faces']}  false faces {row['false_faces']} "
              f"(on {row['images_with_false_faces']} images)  {row['ms_per_image_median']:.0f} ms/image", file=sys.stderr)
    text = json.dumps(results, indent=1)
    if args.json_out:
        Path(args.json_out).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

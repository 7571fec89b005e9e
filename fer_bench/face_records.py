"""One record per face found by ``fer-bench predict``: its fields, its valence, drawn on the image, written out.

A record is a plain dict, one JSON line::

    {"file": "party.jpg", "frame": null, "time": null, "face": 0,
     "box": [412, 80, 96, 96], "label": "happy", "valence": "positive",
     "probabilities": {"angry": 0.02, ...}, "reason": null}

:func:`face_record` and :func:`no_face_record` make them,
:func:`draw_records` draws them on a copy of the image, and
:class:`RecordWriter` writes them as JSON lines and CSV as they come.
"""

from __future__ import annotations

import csv
import json

import numpy as np

from .metrics import VALENCE_GROUPS

VALENCE = {label: group for group, labels in VALENCE_GROUPS.items() for label in labels}
"""Class name -> valence group: positive = happy, surprise; neutral; negative = angry, disgust, fear, sad."""

RECORD_FIELDS = ("file", "frame", "time", "face", "box", "label", "valence", "probabilities", "reason")


def face_record(source: str, index: int, face, probabilities, classes, *, frame=None, seconds=None) -> dict:
    """The record of one classified face."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    label = str(classes[int(np.argmax(probabilities))])
    return {
        "file": source,
        "frame": frame,
        "time": None if seconds is None else round(float(seconds), 3),
        "face": index,
        "box": [int(v) for v in face.box],
        "label": label,
        "valence": VALENCE.get(label),
        "probabilities": {str(name): round(float(p), 4) for name, p in zip(classes, probabilities)},
        "reason": None,
    }


def no_face_record(source: str, reason: str, *, frame=None, seconds=None) -> dict:
    """The record of a photo or frame in which no face was found."""
    return {
        "file": source,
        "frame": frame,
        "time": None if seconds is None else round(float(seconds), 3),
        "face": None,
        "box": None,
        "label": None,
        "valence": None,
        "probabilities": None,
        "reason": reason,
    }


# --------------------------------------------------------------------------- drawing

VALENCE_COLOURS = {"positive": (60, 200, 60), "neutral": (0, 200, 255), "negative": (60, 60, 230), None: (255, 160, 0)}
"""Valence -> BGR colour of a face's box: green, amber, red; blue for a face without a valence."""


def draw_records(image, records) -> np.ndarray:
    """A BGR copy of ``image`` with each record's box and ``label p`` drawn (green, amber, red by valence)."""
    import cv2

    canvas = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[:, :, :3].copy()
    canvas = np.ascontiguousarray(canvas)
    for record in records:
        if record.get("box") is None:
            continue
        x, y, w, h = record["box"]
        colour = VALENCE_COLOURS.get(record.get("valence"), VALENCE_COLOURS[None])
        thickness = max(2, int(round(w / 60)))
        cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
        p = (record.get("probabilities") or {}).get(record["label"])
        text = f"{record['label']} {p:.2f}" if p is not None else str(record["label"])
        scale = max(0.4, w / 160)
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1 + int(scale))
        top = y - th - baseline - 4 if y - th - baseline - 4 >= 0 else y + h  # above the box, or below at the top edge
        cv2.rectangle(canvas, (x, top), (x + tw + 4, top + th + baseline + 4), colour, cv2.FILLED)
        cv2.putText(canvas, text, (x + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1 + int(scale),
                    cv2.LINE_AA)
    return canvas


# --------------------------------------------------------------------------- output


class RecordWriter:
    """Writes records as JSON lines (to a stream or a file) and/or CSV, as they come.

    Parameters
    ----------
    classes : sequence of str
        The model's classes: one probability column each in the CSV.
    json_stream : file-like, optional
        Where JSON lines go (stdout, or an opened ``--json`` file).
    csv_stream : file-like, optional
        Where CSV rows go.
    """

    def __init__(self, classes, *, json_stream=None, csv_stream=None):
        self.classes = tuple(classes)
        self.json_stream = json_stream
        self.csv_writer = None
        if csv_stream is not None:
            self.csv_writer = csv.writer(csv_stream)
            self.csv_writer.writerow(self.csv_header(self.classes))

    @staticmethod
    def csv_header(classes) -> list:
        """Columns of the CSV: file, frame, time, face, x, y, w, h, label, valence, p_<class>..., reason."""
        return ["file", "frame", "time", "face", "x", "y", "w", "h", "label", "valence",
                *[f"p_{name}" for name in classes], "reason"]

    @staticmethod
    def csv_row(record, classes) -> list:
        """One record as a CSV row (empty cells for nulls)."""
        def cell(value):
            return "" if value is None else value

        box = record["box"] or [None] * 4
        probabilities = record["probabilities"] or {}
        return [record["file"], cell(record["frame"]), cell(record["time"]), cell(record["face"]),
                *[cell(v) for v in box], cell(record["label"]), cell(record["valence"]),
                *[cell(probabilities.get(name)) for name in classes], cell(record["reason"])]

    def __call__(self, record: dict):
        if self.json_stream is not None:
            self.json_stream.write(json.dumps(record) + "\n")
            self.json_stream.flush()  # a live camera's records should appear as they come
        if self.csv_writer is not None:
            self.csv_writer.writerow(self.csv_row(record, self.classes))

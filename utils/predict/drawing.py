"""Pictures: annotated images, per-face probability charts, the frequency chart.

Everything is drawn with OpenCV (about a millisecond a picture, and safe in the writer threads):
a matplotlib figure per face cost ~0.1 s, and importing matplotlib for the run's one frequency
chart a third of a second of the app's start-up.
"""
from __future__ import annotations

import cv2
import numpy as np

from utils.predict.faces import region_corners

CLASS_COLOURS_BGR = [(40, 40, 220), (40, 140, 40), (160, 60, 160), (0, 200, 255),
                     (200, 120, 40), (0, 140, 255), (160, 160, 160)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
# matplotlib's tab:blue and tab:orange, as the earlier charts had them
BAR_BGR, WINNER_BGR = (180, 119, 31), (14, 127, 255)
CHART_SIZE = (300, 750)  # height, width
CHART_FACE_SIDE = 192
FREQUENCY_CHART_SIZE = (360, 700)  # height, width


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def label_text(probabilities: np.ndarray, class_names: list[str]) -> str:
    winner = int(np.argmax(probabilities))
    return f"{class_names[winner]} {100 * probabilities[winner]:.0f}%"


def annotate(image: np.ndarray, regions: np.ndarray, probabilities: np.ndarray,
             class_names: list[str], texts: list[str] | None = None) -> np.ndarray:
    """A copy of the image with each face's region (turned with the face), its label and
    probability (or the given ``texts``) drawn on it."""
    image = image.copy()
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 250))
    for index, (corners, face_probabilities) in enumerate(
            zip(region_corners(regions), probabilities)):
        label = int(np.argmax(face_probabilities))
        colour = CLASS_COLOURS_BGR[label % len(CLASS_COLOURS_BGR)]
        cv2.polylines(image, [np.round(corners).astype(np.int32)], True, colour, thickness)
        text = texts[index] if texts else label_text(face_probabilities, class_names)
        x, y = np.round(corners.min(axis=0)).astype(int)
        box_width = corners[:, 0].max() - corners[:, 0].min()
        _put_label(image, text, int(x), int(y), max(0.35, box_width / 220), thickness, colour)
    return image


def _put_label(image, text, x, y, scale, thickness, colour) -> None:
    (text_w, text_h), baseline = cv2.getTextSize(text, FONT, scale, thickness)
    # Above the box, or inside its top edge when the box touches the image's top.
    needed = text_h + baseline + 2 * thickness
    top = y - needed if y >= needed else max(y, 0)
    x = max(x, 0)
    cv2.rectangle(image, (x, top), (x + text_w + 2 * thickness, top + needed - thickness),
                  colour, cv2.FILLED)
    cv2.putText(image, text, (x + thickness, top + text_h + thickness), FONT, scale, (0, 0, 0),
                thickness, cv2.LINE_AA)


def face_chart(face: np.ndarray, probabilities: np.ndarray, class_names: list[str],
               title: str) -> np.ndarray:
    """BGR image: the face as the network saw it (48x48, pixels enlarged) beside a bar chart
    of its probabilities in per cent, the winner in orange."""
    height, width = CHART_SIZE
    chart = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(chart, title, (16, 26), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    top = 56
    chart[top:top + CHART_FACE_SIDE, 16:16 + CHART_FACE_SIDE] = cv2.resize(
        face, (CHART_FACE_SIDE, CHART_FACE_SIDE), interpolation=cv2.INTER_NEAREST)[..., None]
    left, right, bottom, full = 250, width - 16, height - 40, 190  # full: 100 % in pixels
    _grid(chart, (left, right, bottom, full), 100, (50, 100), left - 30)
    winner = int(np.argmax(probabilities))
    _bars(chart, (left, right, bottom, full), probabilities, class_names,
          [[f"{100 * probability:.1f}"] for probability in probabilities],
          [WINNER_BGR if index == winner else BAR_BGR for index in range(len(class_names))])
    return chart


def _grid(chart, box, top_value, values, label_x) -> None:
    """Grey horizontal lines at the values (``top_value``: ``full`` pixels over the baseline
    ``bottom``), each labelled at x ``label_x``."""
    left, right, bottom, full = box
    for value in values:
        level = bottom - int(round(full * value / top_value))
        cv2.line(chart, (left, level), (right, level), (225, 225, 225), 1)
        cv2.putText(chart, f"{value:.0f}", (label_x, level + 4), FONT, 0.38, (90, 90, 90), 1,
                    cv2.LINE_AA)


def _bars(chart, box, fractions, names, texts, colours) -> None:
    """Bars of the fractions (1: ``full`` pixels) between x ``left`` and ``right`` over the
    baseline ``bottom``, each with its lines of text above it and its name below."""
    left, right, bottom, full = box
    slot = (right - left) / len(names)
    for index, (name, fraction) in enumerate(zip(names, fractions)):
        x0 = int(left + index * slot + slot * 0.15)
        x1 = int(left + (index + 1) * slot - slot * 0.15)
        bar_top = bottom - int(round(full * fraction))
        cv2.rectangle(chart, (x0, bar_top), (x1, bottom), colours[index], cv2.FILLED)
        for line, text in enumerate(reversed(texts[index])):
            _centred_text(chart, text, (x0 + x1) // 2, bar_top - 5 - 15 * line, 0.4)
        _centred_text(chart, name, (x0 + x1) // 2, bottom + 18, 0.42)
    cv2.line(chart, (left, bottom), (right, bottom), (0, 0, 0), 1)


def _centred_text(image, text, centre_x, baseline_y, scale) -> None:
    (text_w, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(image, text, (centre_x - text_w // 2, baseline_y), FONT, scale, (0, 0, 0), 1,
                cv2.LINE_AA)


def frequency_chart(counts: np.ndarray, class_names: list[str], title: str) -> bytes:
    """PNG: how often each emotion won, a bar per class in per cent of the faces, each with its
    count and percentage above it."""
    height, width = FREQUENCY_CHART_SIZE
    chart = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(chart, title, (16, 26), FONT, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    relative = 100 * counts / max(int(counts.sum()), 1)
    top_percent = max(10.0, 1.25 * float(relative.max()))  # headroom for the labels
    left, right, bottom = 60, width - 16, height - 40
    full = bottom - 60  # pixels of top_percent
    step = next(step for step in (1, 2, 5, 10, 20, 25, 50) if top_percent / step <= 5)
    _grid(chart, (left, right, bottom, full), top_percent, np.arange(step, top_percent, step),
          left - 34)
    cv2.putText(chart, "% of faces", (8, 50), FONT, 0.38, (90, 90, 90), 1, cv2.LINE_AA)
    _bars(chart, (left, right, bottom, full), relative / top_percent, class_names,
          [[f"{int(count)}", f"{percent:.1f} %"] for count, percent in zip(counts, relative)],
          [BAR_BGR] * len(class_names))
    return encode_png(chart)

"""Pictures: annotated images, per-face probability charts, the frequency chart.

Annotated images and per-face charts are drawn with OpenCV (about a millisecond each, and safe
in the writer threads); a matplotlib figure per face cost ~0.1 s. The run's one frequency chart
is a matplotlib figure.
"""
from __future__ import annotations

import io

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.predict.faces import region_corners

CLASS_COLOURS_BGR = [(40, 40, 220), (40, 140, 40), (160, 60, 160), (0, 200, 255),
                     (200, 120, 40), (0, 140, 255), (160, 160, 160)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
# matplotlib's tab:blue and tab:orange, as the earlier charts had them
BAR_BGR, WINNER_BGR = (180, 119, 31), (14, 127, 255)
CHART_SIZE = (300, 750)  # height, width
CHART_FACE_SIDE = 192


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
    for percent in (50, 100):
        level = bottom - full * percent // 100
        cv2.line(chart, (left, level), (right, level), (225, 225, 225), 1)
        cv2.putText(chart, f"{percent}", (left - 30, level + 4), FONT, 0.38, (90, 90, 90), 1,
                    cv2.LINE_AA)
    slot = (right - left) / len(class_names)
    winner = int(np.argmax(probabilities))
    for index, (name, probability) in enumerate(zip(class_names, probabilities)):
        x0 = int(left + index * slot + slot * 0.15)
        x1 = int(left + (index + 1) * slot - slot * 0.15)
        bar_top = bottom - int(round(full * probability))
        cv2.rectangle(chart, (x0, bar_top), (x1, bottom), WINNER_BGR if index == winner
                      else BAR_BGR, cv2.FILLED)
        _centred_text(chart, f"{100 * probability:.1f}", (x0 + x1) // 2, bar_top - 5, 0.4)
        _centred_text(chart, name, (x0 + x1) // 2, bottom + 18, 0.42)
    cv2.line(chart, (left, bottom), (right, bottom), (0, 0, 0), 1)
    return chart


def _centred_text(image, text, centre_x, baseline_y, scale) -> None:
    (text_w, _), _ = cv2.getTextSize(text, FONT, scale, 1)
    cv2.putText(image, text, (centre_x - text_w // 2, baseline_y), FONT, scale, (0, 0, 0), 1,
                cv2.LINE_AA)


def frequency_chart(counts: np.ndarray, class_names: list[str], title: str) -> bytes:
    figure = Figure(figsize=(7, 3.6))
    axes = figure.add_subplot()
    relative = 100 * counts / max(int(counts.sum()), 1)
    bars = axes.bar(class_names, relative, color="tab:blue")
    axes.bar_label(bars, labels=[f"{int(c)}\n{r:.1f} %" for c, r in zip(counts, relative)],
                   fontsize=8)
    axes.set_ylabel("relative frequency (%)")
    axes.set_ylim(0, max(10.0, 1.25 * relative.max()))
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()

"""Pictures: annotated images, per-face probability charts, the frequency chart."""
from __future__ import annotations

import io

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from utils.predict.inputs import Item

CLASS_COLOURS_BGR = [(40, 40, 220), (40, 140, 40), (160, 60, 160), (0, 200, 255),
                     (200, 120, 40), (0, 140, 255), (160, 160, 160)]


def encode_png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return data.tobytes()


def figure_png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def annotate(item: Item, class_names: list[str]) -> np.ndarray:
    """A copy of the image with each face's box, label and probability drawn on it."""
    image = item.image.copy()
    height, width = image.shape[:2]
    thickness = max(1, round(min(height, width) / 250))
    for (x, y, w, h), probabilities in zip(item.boxes, item.probabilities):
        label = int(np.argmax(probabilities))
        colour = CLASS_COLOURS_BGR[label % len(CLASS_COLOURS_BGR)]
        cv2.rectangle(image, (int(x), int(y)), (int(x + w - 1), int(y + h - 1)), colour,
                      thickness)
        text = f"{class_names[label]} {100 * probabilities[label]:.0f}%"
        scale = max(0.35, w / 220)
        (text_w, text_h), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale,
                                                     thickness)
        # Above the box, or inside its top edge when the box touches the image's top.
        top = y - text_h - baseline - 2 * thickness if y >= text_h + baseline + 2 * thickness \
            else y
        cv2.rectangle(image, (int(x), int(top)),
                      (int(x + text_w + 2 * thickness), int(top + text_h + baseline + thickness)),
                      colour, cv2.FILLED)
        cv2.putText(image, text, (int(x + thickness), int(top + text_h + thickness)),
                    cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return image


def face_chart(face: np.ndarray, probabilities: np.ndarray, class_names: list[str],
               title: str) -> bytes:
    """The face as the network saw it (48x48) beside a bar chart of its probabilities."""
    figure = Figure(figsize=(7.5, 3.0))
    grid = figure.add_gridspec(1, 2, width_ratios=[1, 3.2])
    face_axes = figure.add_subplot(grid[0])
    face_axes.imshow(face, cmap="gray", vmin=0, vmax=255)
    face_axes.set_axis_off()
    axes = figure.add_subplot(grid[1])
    winner = int(np.argmax(probabilities))
    colours = ["tab:orange" if i == winner else "tab:blue" for i in range(len(class_names))]
    bars = axes.bar(class_names, 100 * probabilities, color=colours)
    axes.bar_label(bars, labels=[f"{100 * p:.1f}" for p in probabilities], fontsize=8)
    axes.set_ylim(0, 110)
    axes.set_ylabel("probability (%)")
    axes.tick_params(axis="x", labelsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure_png(figure)


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
    return figure_png(figure)

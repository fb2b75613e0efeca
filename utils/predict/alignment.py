"""Does turning faces eyes-level help the model? Measured on FER2013 faces of known label.

    python -m utils.predict.alignment                    # PublicTest of the full FER2013
    python -m utils.predict.alignment --fit-framing      # faces.BOX_HEIGHT_TO_FER_SIDE

Each PublicTest face is upscaled 4x (INTER_CUBIC) onto a plain grey background, the scene is
rotated by a known angle, and the app's own steps run on it: YuNet detection, the FER framing
with and without alignment, the default model with its test-time views. The table gives, per
angle, how many faces were found and the accuracy over all faces both ways (a face not found
counts as wrong), next to the model's accuracy on the original 48x48 images.

``--fit-framing`` measures how YuNet's box sits on FER2013's 48x48 faces (Training faces
upscaled the same way, upright): the median of the image's side over the box's height, and of
the offsets of its centre from the box's, in box heights.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from loaders.sample import FULL_FER2013
from loaders.sources import IMAGE_SIZE, DatasetError, read_csv
from utils.predict.faces import DetectorSettings, cut_faces, face_regions, make_detector
from utils.predict.model import DEFAULT_MODEL, EmotionModel

UPSCALE = 4
CANVAS = 320  # the scene's side: the upscaled face (192 px) and a margin that rotation needs
BACKGROUND = 200
ANGLES = (-30, -15, 0, 15, 30)  # degrees, counter-clockwise on screen (cv2's convention)


def scene(face: np.ndarray, angle: float) -> np.ndarray:
    """A BGR scene: the 48x48 face upscaled, centred on a plain background, rotated."""
    side = IMAGE_SIZE * UPSCALE
    image = np.full((CANVAS, CANVAS), BACKGROUND, np.uint8)
    start = (CANVAS - side) // 2
    image[start:start + side, start:start + side] = cv2.resize(
        face, (side, side), interpolation=cv2.INTER_CUBIC)
    if angle:
        matrix = cv2.getRotationMatrix2D((CANVAS / 2 - 0.5, CANVAS / 2 - 0.5), angle, 1.0)
        image = cv2.warpAffine(image, matrix, (CANVAS, CANVAS), flags=cv2.INTER_LINEAR,
                               borderValue=BACKGROUND)
    return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def strongest(found):
    """The detection of highest score alone (the scene holds one face), or None."""
    if len(found.scores) == 0:
        return None
    best = int(np.argmax(found.scores))
    return type(found)(*(field[best:best + 1] for field in found))


def fit_framing(faces: np.ndarray) -> tuple[np.ndarray, int]:
    """Medians of (FER side / box height, centre offset x / height, offset y / height), and
    how many faces were found."""
    detector = make_detector(DetectorSettings())
    side = IMAGE_SIZE * UPSCALE
    centre = CANVAS // 2 - side // 2 + side / 2
    ratios = []
    for face in faces:
        found = strongest(detector.detect(scene(face, 0)))
        if found is not None:
            x, y, w, h = found.boxes[0]
            ratios.append([side / h, (centre - x - w / 2) / h, (centre - y - h / 2) / h])
    return np.median(np.array(ratios), axis=0), len(ratios)


def accuracies(faces: np.ndarray, labels: np.ndarray, model: EmotionModel,
               angle: float) -> tuple[float, float, float]:
    """(fraction of faces found, accuracy without alignment, accuracy with it) at one angle."""
    detector = make_detector(DetectorSettings())
    crops = {False: [], True: []}
    found_rows = []
    for row, face in enumerate(faces):
        image = scene(face, angle)
        found = strongest(detector.detect(image))
        if found is None:
            continue
        found_rows.append(row)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        for align in crops:
            crops[align].append(cut_faces(gray, face_regions(found, align))[0])
    results = [len(found_rows) / len(faces)]
    for align in (False, True):
        predicted = model.probabilities(np.array(crops[align]), augment=True).argmax(axis=1)
        results.append(float((predicted == labels[found_rows]).sum() / len(faces)))
    return tuple(results)


def parse_arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m utils.predict.alignment",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=FULL_FER2013,
                        help=f"the full fer2013.csv(.gz) (default {FULL_FER2013})")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only the first N faces (default: all)")
    parser.add_argument("--fit-framing", action="store_true",
                        help="measure the FER framing on 1,000 Training faces instead")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    try:
        data = read_csv(args.data)
    except (OSError, DatasetError) as err:
        print(f"error: {args.data}: cannot read the FER2013 data ({err}); give its path with "
              f"--data", file=sys.stderr)
        return 2
    if args.fit_framing:
        (side, offset_x, offset_y), n_found = fit_framing(
            data.images[data.usage == "Training"][:1000])
        print(f"{n_found} of 1000 Training faces found; FER side / box height {side:.3f}, "
              f"centre offset from the box's {offset_x:+.3f}, {offset_y:+.3f} box heights")
        return 0
    test = data.usage == "PublicTest"
    faces, labels = data.images[test][:args.limit], data.labels[test][:args.limit]
    model = EmotionModel(DEFAULT_MODEL)
    original = float((model.probabilities(faces, augment=True).argmax(1) == labels).mean())
    print(f"{len(faces)} PublicTest faces; the model on the 48x48 originals: "
          f"{100 * original:.2f} %")
    print(f"{'angle':>6} {'found':>8} {'upright crop':>13} {'aligned crop':>13}")
    for angle in ANGLES:
        found, upright, aligned = accuracies(faces, labels, model, angle)
        print(f"{angle:>5}° {100 * found:7.2f} % {100 * upright:11.2f} % "
              f"{100 * aligned:11.2f} %")
    return 0


if __name__ == "__main__":
    from utils.support import host_tuning

    host_tuning.apply()  # an entry point, as the launcher: before JAX starts
    sys.exit(main())

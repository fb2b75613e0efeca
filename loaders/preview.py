"""PNG grids to see what the network sees: the builder's variants, or online augmentation.

    python -m loaders.preview FILE.h5 --out grid.png [--split train|test_aug] [--count 4] [--seed 0]
    python -m loaders.preview FILE.h5 --out grid.png --augment "crop:4,flip,rotate:10" [--draws 7]

Variants: one row per source image (its class and source index on the left), one column per
variant in the file's order, titled with the variant's name: the layout of the thesis's figures
15-17. With --augment: one row per training image, the image as stored, then --draws versions
of it as the launcher's online augmentation makes them (utils.training.online_augmentation, the same
function the train step runs, each draw with its own key).
"""
from __future__ import annotations

import argparse
import os
import sys
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from loaders.hdf5 import open_dataset, split_group
from loaders.sources import DatasetError


def preview_grid(path: str | os.PathLike, out: str | os.PathLike, *, split: str = "train",
                 count: int = 4, seed: int = 0, sources: list[int] | None = None) -> Path:
    """Draw `count` source images of `split` (chosen with default_rng(seed), or the given
    source indices) with all their variants into the PNG `out`; returns its path."""
    if sources is None and count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    with open_dataset(path) as file:
        group = split_group(file, split)
        if "source_index" not in group:
            raise DatasetError(f"{path}: split {split!r} records no source images "
                               f"(use train or test_aug)")
        source_index = group["source_index"][...]
        available = np.unique(source_index)
        if sources is None:
            picked = np.random.default_rng(seed).choice(
                available, size=min(count, len(available)), replace=False)
            sources = sorted(picked.tolist())
        missing = sorted(set(sources) - set(available.tolist()))
        if missing:
            raise DatasetError(f"{path}: split {split!r} has no source image {missing[0]}")
        class_names = [str(name) for name in file.attrs["class_names"]]
        variant_names = [str(name) for name in file.attrs["variant_names"]]
        rows = []
        for source in sources:
            positions = np.flatnonzero(source_index == source)
            order = np.argsort(group["variant_index"][positions])
            rows.append((source, group["labels"][positions[0]], group["images"][positions][order]))
        labels = (f", FER+ {file.attrs['label_mode']} labels"
                  if file.attrs.get("label_source") == "ferplus" else "")
        title = f"{file.attrs['variant']} ({Path(path).name}, {split}{labels})"
    figure = Figure(figsize=(1.1 * len(variant_names) + 0.8, 1.3 * len(rows) + 0.6))
    axes = figure.subplots(len(rows), len(variant_names), squeeze=False)
    for row_axes, (source, label, images) in zip(axes, rows):
        for column, (axis, image) in enumerate(zip(row_axes, images)):
            axis.imshow(image, cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
            if column == 0:
                axis.set_ylabel(f"{class_names[label]}\n#{source}", fontsize=8)
    for axis, name in zip(axes[0], variant_names):
        axis.set_title(textwrap.fill(name, 14), fontsize=7)
    figure.suptitle(title, fontsize=9)
    return _save(figure, out)


def augment_grid(path: str | os.PathLike, out: str | os.PathLike, augment: str, *,
                 count: int = 6, draws: int = 7, seed: int = 0) -> Path:
    """Draw `count` training images (default_rng(seed)'s choice) and `draws` online-augmented
    versions of each into the PNG `out`; returns its path."""
    import jax
    import jax.numpy as jnp

    from loaders.batches import scale_pixels
    from utils.training import online_augmentation

    try:
        spec = online_augmentation.parse(augment, "--augment")
    except online_augmentation.AugmentError as error:
        raise DatasetError(str(error)) from None
    with open_dataset(path) as file:
        group = split_group(file, "train")
        rows = np.sort(np.random.default_rng(seed).choice(
            len(group["labels"]), size=min(count, len(group["labels"])), replace=False))
        images, labels = group["images"][rows], group["labels"][rows]
        class_names = [str(name) for name in file.attrs["class_names"]]
    x = jnp.asarray(scale_pixels(images))
    versions = [images] + [online_augmentation.numpy_images(online_augmentation.augment(
        x, jax.random.fold_in(jax.random.key(seed), draw), spec)) for draw in range(draws)]
    figure = Figure(figsize=(1.1 * (draws + 1) + 0.8, 1.3 * len(rows) + 0.6))
    axes = figure.subplots(len(rows), draws + 1, squeeze=False)
    for index, row_axes in enumerate(axes):
        for column, axis in enumerate(row_axes):
            axis.imshow(versions[column][index], cmap="gray", vmin=0, vmax=255)
            axis.set_xticks([])
            axis.set_yticks([])
        row_axes[0].set_ylabel(f"{class_names[labels[index]]}\n#{rows[index]}", fontsize=8)
    for column, axis in enumerate(axes[0]):
        axis.set_title("stored" if column == 0 else f"draw {column}", fontsize=7)
    figure.suptitle(f"augment={spec.spec()} ({Path(path).name}, train)", fontsize=9)
    return _save(figure, out)


def _save(figure, out) -> Path:
    out = Path(out)
    try:
        figure.savefig(out, dpi=100)
    except OSError as error:
        raise DatasetError(f"{out}: cannot write ({error.strerror or error})") from None
    return out


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loaders.preview",
                                     description="Draw source images and all their variants.")
    parser.add_argument("dataset", help="an HDF5 file built by loaders.build_dataset")
    parser.add_argument("--out", required=True, help="the PNG to write")
    parser.add_argument("--split", default="train", choices=["train", "test_aug"])
    parser.add_argument("--count", type=_positive_int, default=4, help="how many source images")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of images")
    parser.add_argument("--sources", type=int, nargs="+", metavar="INDEX",
                        help="these source indices instead of a random choice")
    parser.add_argument("--augment", metavar="SPEC",
                        help="instead of the variants: training images as online augmentation "
                             "makes them (the launcher's augment= value)")
    parser.add_argument("--draws", type=_positive_int, default=7,
                        help="with --augment: augmented versions per image")
    args = parser.parse_args(argv)
    try:
        if args.augment:
            out = augment_grid(args.dataset, args.out, args.augment, count=args.count,
                               draws=args.draws, seed=args.seed)
        else:
            out = preview_grid(args.dataset, args.out, split=args.split, count=args.count,
                               seed=args.seed, sources=args.sources)
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

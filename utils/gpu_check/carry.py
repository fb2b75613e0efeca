"""A large file taken to the device machine in parts, each small enough to travel with one call.

A call to the lent GPU machine sends the working tree, at most 64 MiB with what it carries, and
the tracked tree alone is about 24 MiB; the built FER2013 dataset (75 MB) does not fit. So it
travels xz-compressed in parts, one a call: ``pack`` writes part k of n into ``FOLDER/k/``
beside a manifest (the file's size and SHA-256, each part's); on the device, ``unpack`` keeps
each arriving part in a staging folder (what a call writes outside $OUT lasts while the
machine is held) and, once all n are there, rebuilds the file, checked against its SHA-256,
under a temporary name renamed into place.

    python -m utils.gpu_check.carry pack datasets/fer2013_raw.h5 device_carry --parts 2
    python -m utils.gpu_check.carry unpack device_carry --stash /tmp/fer_carry --to datasets

Plain Python (lzma, hashlib): it runs on the device before anything else is set up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import sys
from pathlib import Path

from utils.support.safe_files import atomic_write, temporary_name

MANIFEST = "manifest.json"


class CarryError(Exception):
    """A part or manifest that cannot be used; the message says which and what to do."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pack(source: Path, folder: Path, parts: int, preset: int = 9) -> list[Path]:
    """Write the xz-compressed ``source`` as ``parts`` nearly equal parts, part k in
    ``folder/k/`` with a copy of the manifest; return the parts' paths."""
    if parts < 1:
        raise CarryError(f"--parts must be at least 1, got {parts}")
    if not source.is_file():
        raise CarryError(f"{source}: no such file; build it first (README \"Datasets\")")
    data = source.read_bytes()
    compressed = lzma.compress(data, preset=preset)
    size = -(-len(compressed) // parts)
    chunks = [compressed[start:start + size] for start in range(0, len(compressed), size)]
    chunks += [b""] * (parts - len(chunks))  # a tiny file still comes in the parts asked for
    names = [f"{source.name}.xz.{index}of{parts}" for index in range(1, parts + 1)]
    manifest = {"file": source.name, "size": len(data), "sha256": sha256(data),
                "parts": [{"name": name, "size": len(chunk), "sha256": sha256(chunk)}
                          for name, chunk in zip(names, chunks)]}
    written = []
    for index, (name, chunk) in enumerate(zip(names, chunks), start=1):
        part_folder = folder / str(index)
        part_folder.mkdir(parents=True, exist_ok=True)
        atomic_write(part_folder / name, chunk)
        atomic_write(part_folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        written.append(part_folder / name)
    return written


def _manifest(folders: list[Path]) -> dict:
    for folder in folders:
        for path in sorted(folder.glob(f"*/{MANIFEST}")) + sorted(folder.glob(MANIFEST)):
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError) as err:
                raise CarryError(f"{path}: not a readable manifest ({err}); pack the file "
                                 f"again") from None
    raise CarryError(f"no {MANIFEST} under {', '.join(map(str, folders))}: carry a part's "
                     f"folder written by `python -m utils.gpu_check.carry pack`")


def stash(carried: Path, staging: Path) -> dict:
    """Copy the parts that arrived under ``carried`` (checked) into ``staging``; the
    manifest."""
    manifest = _manifest([carried, staging])
    staging.mkdir(parents=True, exist_ok=True)
    atomic_write(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
    for part in manifest["parts"]:
        for arrived in carried.glob(f"*/{part['name']}"):
            atomic_write(staging / part["name"], _checked_part(arrived, part))
    return manifest


def _checked_part(path: Path, part: dict) -> bytes:
    """The part's bytes, once they match the manifest's size and SHA-256."""
    data = path.read_bytes()
    if len(data) == part["size"] and sha256(data) == part["sha256"]:
        return data
    raise CarryError(f"{path}: its size or SHA-256 differs from the manifest's (a part "
                         f"of another packing, or damaged in transit); pack the file again "
                         f"and carry its parts")


def missing_parts(staging: Path, manifest: dict) -> list[str]:
    return [part["name"] for part in manifest["parts"] if not (staging / part["name"]).is_file()]


def unpack(staging: Path, manifest: dict, to: Path) -> Path:
    """Rebuild the file from its parts in ``staging`` into the folder ``to``, checked against
    the manifest's SHA-256; its path."""
    missing = missing_parts(staging, manifest)
    if missing:
        raise CarryError(f"{staging}: parts missing ({', '.join(missing)}); carry them in the "
                         f"next call while the machine is still held")
    to.mkdir(parents=True, exist_ok=True)
    target = to / manifest["file"]
    temporary = temporary_name(target)
    decompressor = lzma.LZMADecompressor()
    digest = hashlib.sha256()
    with open(temporary, "wb") as out:
        for part in manifest["parts"]:
            data = decompressor.decompress(_checked_part(staging / part["name"], part))
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != manifest["sha256"] or temporary.stat().st_size != manifest["size"]:
        temporary.unlink()
        raise CarryError(f"{target}: the rebuilt file's SHA-256 differs from the manifest's; "
                         f"nothing was written; pack the file again")
    temporary.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m utils.gpu_check.carry",
                                     description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    packing = commands.add_parser("pack", help="split a file into compressed parts")
    packing.add_argument("file", type=Path)
    packing.add_argument("folder", type=Path)
    packing.add_argument("--parts", type=int, default=2)
    unpacking = commands.add_parser("unpack", help="keep the arrived parts; rebuild the file "
                                                   "once all are there")
    unpacking.add_argument("carried", type=Path)
    unpacking.add_argument("--stash", type=Path, required=True)
    unpacking.add_argument("--to", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        if args.command == "pack":
            for path in pack(args.file, args.folder, args.parts):
                print(f"{path}: {path.stat().st_size / 2**20:.1f} MiB")
            return 0
        manifest = stash(args.carried, args.stash)
        missing = missing_parts(args.stash, manifest)
        if missing:
            print(f"{manifest['file']}: {len(manifest['parts']) - len(missing)} of "
                  f"{len(manifest['parts'])} parts kept in {args.stash}; carry the rest "
                  f"({', '.join(missing)}) in the next call")
            return 0
        print(f"{unpack(args.stash, manifest, args.to)}: rebuilt, SHA-256 checked")
        return 0
    except CarryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

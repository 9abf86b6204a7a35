"""Labelled scans (a CVAT export) -> training tiles at the working scale.

Masks are scaled with nearest neighbour (labels must not blur), images with area
averaging; both to the model's working size (long side 2016 by default), then cut into
tiles. Scans are split into train / valid by name (a stable hash), never tile by tile,
so no scan is on both sides. 16-bit scans stay 16-bit (tiles are PNG files).
The output folder must be empty (force: a previous prepare's output there is replaced), so
no scan of an earlier run lingers on the other side. Scan names from the export are checked
('..', absolute, backslash, NUL refused; 'a/b' becomes the tile stem 'a__b'); a bad scan
(undecodable, mask of another size, colours in no label) fails the whole prepare, listing
every bad scan, and leaves no tiles behind. Mask colours in no label of labelmap.txt are an
error like the others (strict, the default; not strict: background, with a warning per mask).
numpy + OpenCV only.
"""
import hashlib
import json
import os
import shutil

import cv2
import numpy as np

from shared import defaults
from shared.cvat import Export, ExportError, describe_colours
from shared.errors import DustspotError
from shared.imageio import read_scan
from shared.pipeline import to_working
from shared.tiling import tile_starts

WORKING_SIZE = 2016
TILE = 256
VALID_EVERY = 5
_OUTPUTS = ("train", "valid", "dataset.json")     # what prepare writes in --out (and --force removes)


def split_of(name: str, valid_every: int = VALID_EVERY) -> str:
    return "valid" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % valid_every == 0 else "train"


def _output_stem(name: str) -> str:
    """A scan name as a flat file stem: CVAT keeps a task's folders ('roll1/frame3'); the
    trainer reads one flat folder, so '/' becomes '__' (as `dustspot export-cvat` names them)."""
    return name.replace("/", "__")


def _clear_output(out_dir: str, force: bool) -> bool:
    """Make sure out_dir is empty (or, with force, holds only a previous prepare's output, which
    is removed). Returns whether out_dir was created here."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir}: exists and is not a folder")
    if not os.path.isdir(out_dir):
        os.makedirs(out_dir)
        return True
    entries = sorted(os.listdir(out_dir))
    if not entries:
        return False
    if not force:
        raise ExportError(f"{out_dir}: not empty ({', '.join(entries[:5])}{'...' if len(entries) > 5 else ''}); "
                          "choose an empty --out, or pass --force to replace a previous prepare's output")
    foreign = [e for e in entries if e not in _OUTPUTS]
    if foreign:
        raise ExportError(f"{out_dir}: holds more than a prepare output ({', '.join(foreign[:5])}); "
                          "--force only replaces train/, valid/ and dataset.json: refused")
    _remove_outputs(out_dir)
    return False


def _remove_outputs(out_dir: str) -> None:
    for entry in _OUTPUTS:
        path = os.path.join(out_dir, entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.remove(path)


def _write_png(path: str, array: np.ndarray, root: str) -> None:
    real = os.path.realpath(path)
    if os.path.commonpath([real, root]) != root:
        raise ExportError(f"{path}: outside the output folder {root}; refused")
    if not cv2.imwrite(path, array):
        raise ExportError(f"{path}: could not be written")


def prepare(export_path: str, out_dir: str, images_dir: str | None = None, working_size: int = WORKING_SIZE,
            tile: int = TILE, valid_every: int = VALID_EVERY, dust_labels=None, echo=print, force: bool = False,
            strict: bool = True, warn=None, max_pixels: int = defaults.MAX_PIXELS) -> dict:
    """Cut the export into out_dir/{train,valid}/{images,masks}/ tiles and write dataset.json.

    out_dir must be empty; force replaces a previous prepare's output there. Every scan is
    checked (names, sizes, decodable); when any is unusable, ExportError lists each as
    "MEMBER: reason" and no tiles are left behind. Mask pixels of a colour in no label are such
    an error (strict, the default); not strict, they become background with a warning (`warn`,
    default: echo) naming the mask and the colours, counted in dataset.json ("unknown_colour_pixels").
    """
    warn = warn or echo
    export = Export(export_path, max_pixels=max_pixels)
    names = export.names()                  # refuses unsafe names and an empty export
    export.dust_colours(dust_labels)        # refuses unknown --label names before any work
    stems = {}
    for name in names:
        stem = _output_stem(name)
        if stem in stems:
            raise ExportError(f"scan names {stems[stem]!r} and {name!r} both give tiles named {stem}_*; refused")
        stems[stem] = name
    created = _clear_output(out_dir, force)
    root = os.path.realpath(out_dir)
    counts = {"train": 0, "valid": 0, "scans": 0, "dust_pixels": 0, "pixels": 0}
    failures, stray_pixels = [], {}
    try:
        for name in names:
            try:
                data, origin = export.image(name, images_dir)
                scan = read_scan(origin, data, max_pixels)
                h, w = scan.pixels.shape[:2]
                unknown = None if strict else {}
                mask = export.dust_mask(name, dust_labels, size=(w, h), unknown=unknown)
            except (DustspotError, cv2.error) as exc:
                failures.append(str(exc) if isinstance(exc, DustspotError) else f"{name}: {exc}")
                continue
            if unknown:
                member = f"SegmentationClass/{name}.png"
                stray_pixels[member] = sum(unknown.values())
                warn(f"warning: {member}: {describe_colours(unknown)}; counted as background "
                     "(--strict refuses them)")
            if failures:
                continue                    # only checking the rest now: nothing will be kept
            scale = working_size / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            image = to_working(scan.pixels, size[1], size[0])   # the image the pipeline infers on
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
            if image.ndim == 2:
                image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
            split = split_of(name, valid_every)
            for sub in ("images", "masks"):
                os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
            stem = _output_stem(name)
            for y in tile_starts(size[1], tile, 0):
                for x in tile_starts(size[0], tile, 0):
                    tile_name = f"{stem}_{y:05d}_{x:05d}.png"
                    _write_png(os.path.join(out_dir, split, "images", tile_name), image[y:y + tile, x:x + tile], root)
                    _write_png(os.path.join(out_dir, split, "masks", tile_name), mask[y:y + tile, x:x + tile], root)
                    counts[split] += 1
            counts["scans"] += 1
            counts["dust_pixels"] += int(np.count_nonzero(mask))
            counts["pixels"] += int(mask.size)
            echo(f"{name}: {split}, {size[0]}x{size[1]}")
        if failures:
            raise ExportError(f"{export_path}: {len(failures)} of {len(names)} scans cannot be used "
                              "(nothing was written):\n  " + "\n  ".join(failures))
        description = {"source": os.path.abspath(export_path), "labels": export.labels(),
                       "dust_labels": dust_labels or "all but background", "working_size": working_size,
                       "tile": tile, "valid_every": valid_every,
                       "tiles": {k: counts[k] for k in ("train", "valid")}, "scans": counts["scans"],
                       "dust_pixel_fraction": counts["dust_pixels"] / max(counts["pixels"], 1),
                       "unknown_colour_pixels": stray_pixels}
        with open(os.path.join(out_dir, "dataset.json"), "w") as f:
            json.dump(description, f, indent=1)
    except BaseException:
        _remove_outputs(out_dir)            # out_dir held nothing else (checked above)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
    return description

"""Labelled scans (a CVAT export) -> training tiles at the working scale.

Masks are scaled with nearest neighbour (labels must not blur), images with area
averaging; both to the model's working size (long side 2016 by default), then cut into
tiles. Scans are split into train / valid by name (a stable hash), never tile by tile,
so no scan is on both sides. 16-bit scans stay 16-bit (tiles are PNG files).
numpy + OpenCV only.
"""
import hashlib
import json
import os

import cv2
import numpy as np

from shared.cvat import Export
from shared.imageio import read_scan
from shared.tiling import tile_starts

WORKING_SIZE = 2016
TILE = 256
VALID_EVERY = 5


def split_of(name: str, valid_every: int = VALID_EVERY) -> str:
    return "valid" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % valid_every == 0 else "train"


def prepare(export_path: str, out_dir: str, images_dir: str | None = None, working_size: int = WORKING_SIZE,
            tile: int = TILE, valid_every: int = VALID_EVERY, dust_labels=None, echo=print) -> dict:
    export = Export(export_path)
    counts = {"train": 0, "valid": 0, "scans": 0, "dust_pixels": 0, "pixels": 0}
    for name in export.names():
        data, origin = export.image(name, images_dir)
        scan = read_scan(origin, data)
        mask = export.dust_mask(name, dust_labels)
        h, w = scan.pixels.shape[:2]
        if mask.shape != (h, w):
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        scale = working_size / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        image = cv2.resize(scan.pixels, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        split = split_of(name, valid_every)
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
        for y in tile_starts(size[1], tile, 0):
            for x in tile_starts(size[0], tile, 0):
                tile_img = image[y:y + tile, x:x + tile]
                tile_mask = mask[y:y + tile, x:x + tile]
                stem = f"{name}_{y:05d}_{x:05d}"
                cv2.imwrite(os.path.join(out_dir, split, "images", stem + ".png"), tile_img)
                cv2.imwrite(os.path.join(out_dir, split, "masks", stem + ".png"), tile_mask)
                counts[split] += 1
        counts["scans"] += 1
        counts["dust_pixels"] += int(np.count_nonzero(mask))
        counts["pixels"] += int(mask.size)
        echo(f"{name}: {split}, {size[0]}x{size[1]}")
    description = {"source": os.path.abspath(export_path), "labels": export.labels(),
                   "dust_labels": dust_labels or "all but background", "working_size": working_size,
                   "tile": tile, "valid_every": valid_every, "tiles": {k: counts[k] for k in ("train", "valid")},
                   "scans": counts["scans"],
                   "dust_pixel_fraction": counts["dust_pixels"] / max(counts["pixels"], 1)}
    with open(os.path.join(out_dir, "dataset.json"), "w") as f:
        json.dump(description, f, indent=1)
    return description

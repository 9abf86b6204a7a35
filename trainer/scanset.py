"""Held-out scan sets: whole photos dusted like film scans, scored like realdust-dev.

realdust-dev is 4 full frames (~3300 px long side, one clean) with real dust layouts, scored
by ../shared/eval/score.py. Tuning on it would make its figures lie, so the trainer builds
its own set the same way from *validation* backgrounds only (trainer.data.split_backgrounds:
never trained on): images/<name>.jpg and gt/<name>.png (255 dust, 128 too faint to see,
0 clean). Thresholds and post-processing are chosen on this set; realdust-dev only reports.
"""
import os

import cv2
import numpy as np

from . import data, synth

LONG_SIDE = 3300          # realdust-dev's dusty frames are ~3300 x 2250
BRIGHT_SHARE = 0.25       # bright dust (negative film), as realdust-dev's scan03
JPEG_QUALITY = 92


def build(backgrounds, out, count, clean=2, seed=0, sprite_dir=None, split="valid",
          long_side=LONG_SIDE, progress=None):
    """Write `count` dusty and `clean` grain-only frames; returns the list of names written."""
    paths = synth.load_backgrounds(backgrounds)
    if split == "valid":
        paths = data.split_backgrounds(paths)[1]
    if not paths:
        raise ValueError("no background images found")
    sprites = synth.SpriteBank(sprite_dir) if sprite_dir else None
    for sub in ("images", "gt"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    names = []
    for i in range(count + clean):
        rng = np.random.default_rng([seed, i])
        photo = None
        for _ in range(20):                              # skip unreadable files, not forever
            photo = synth.read_background(paths[int(rng.integers(len(paths)))])
            if photo is not None:
                break
        if photo is None:
            raise ValueError("no readable background image among " + ", ".join(paths[:5]))
        scale = long_side / max(photo.shape[:2])
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=interp)
        is_clean = i >= count
        dark = rng.random() >= BRIGHT_SHARE
        scan, truth = synth.dust_scan(photo, rng, sprites, dark=dark, dust=not is_clean)
        name = f"{'clean' if is_clean else 'scan'}{i:03d}"
        cv2.imwrite(os.path.join(out, "images", name + ".jpg"), scan,
                    [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        cv2.imwrite(os.path.join(out, "gt", name + ".png"), truth)
        names.append(name)
        if progress:
            progress(name)
    return names

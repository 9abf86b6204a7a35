"""Is realdust-dev's scan01 missed for its dust or for its scene?  Move the dust and see.

    python -m trainer.transplant_probe CLEAN_PATH_PHOTO PHOTOS... [--model REF --registry R]

scan01 is plasma-workspace-wallpapers' Path (2560x1600, columns 115-2444, upscaled to
3335x2290) with dark dust and grain on top.  Given that clean photo, the probe recovers the dust
layer's opacity per pixel (the scan darkens each pixel towards a tone of ~24: in the dust cores
scan = 0.26 x photo + 17.8, least squares, session 12), composites the same layer, the same way,
onto each PHOTO (scaled to scan01's size, grain of std 5 added) and onto flat mid-grey, runs the
default pipeline and prints, per photo, its texture (`synth.high_pass`) and the share of
visible objects (luma change >= 10, realdust-dev's rule) whose peak probability reaches the spot
threshold.  A diagnosis tool: it reads realdust-dev's image and truth, never trains on them.

Session 12, dustspot-unet 0.4.1: mid-grey 99 % found; smooth photos (texture < 2) 98-99 %; busy
ones 1-43 % (OneStandsOut 1 %, life_by_Aitzol_Berasategi 7 %, EveningGlow 43 %).  The miss is
the scene around the dust, not how the dust is drawn.
"""
import argparse
import os

import cv2
import numpy as np
from scipy import ndimage

from shared.pipeline import SegmentOptions, open_session, segment

from .synth import high_pass, load_backgrounds, read_background

REALDUST = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "realdust-dev")
PATH_CROP = (slice(0, 1600), slice(115, 2445))   # where scan01 sits in Path's 2560x1600
DUST_TONE = 24.0                                 # what scan01's dust darkens towards
VISIBLE = 10.0                                   # realdust-dev: visible dust changes luma >= 10
GRAIN = 5.0


def dust_layer(scan, clean_photo, truth):
    """Per-pixel opacity of scan01's dust over its clean photo (0 outside the truth)."""
    h, w = truth.shape
    photo = cv2.resize(clean_photo[PATH_CROP], (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    before, after = photo.mean(axis=2), scan.astype(np.float32).mean(axis=2)
    alpha = np.clip((before - after) / np.maximum(before - DUST_TONE, 1.0), 0, 1)
    return cv2.GaussianBlur(np.where(truth > 0, alpha, 0).astype(np.float32), (0, 0), 0.7)


def found_share(photo, alpha, labels, n, session, rng):
    """Composite the layer onto `photo` (BGR float, truth-sized); share of visible objects found."""
    a = alpha[..., None]
    dusted = photo * (1 - a) + DUST_TONE * a + rng.normal(0, GRAIN, alpha.shape)[..., None]
    dusted = np.clip(dusted + 0.5, 0, 255).astype(np.uint8)
    change = ndimage.mean(np.abs(photo.mean(axis=2) - dusted.mean(axis=2)), labels, range(1, n + 1))
    visible = change >= VISIBLE
    seg = segment(cv2.cvtColor(dusted, cv2.COLOR_BGR2RGB), session)
    peak = ndimage.maximum(seg.prob8, labels, range(1, n + 1))
    spot = max(session.options.threshold, session.options.spot_threshold) * 255
    return int(visible.sum()), float(((peak >= spot) & visible).sum() / max(visible.sum(), 1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path_photo", help="Path's 2560x1600.jpg (plasma-workspace-wallpapers)")
    ap.add_argument("photos", nargs="+", help="photos or folders to move the dust onto")
    ap.add_argument("--model", default=None)
    ap.add_argument("--registry", default=None)
    ap.add_argument("--realdust", default=REALDUST)
    args = ap.parse_args(argv)
    scan = cv2.imread(os.path.join(args.realdust, "images", "scan01.jpg"))
    truth = cv2.imread(os.path.join(args.realdust, "gt", "scan01.png"), cv2.IMREAD_GRAYSCALE)
    clean = cv2.imread(args.path_photo)
    if scan is None or truth is None or clean is None or clean.shape[:2] != (1600, 2560):
        raise SystemExit("need realdust-dev's scan01 and Path's 2560x1600 photo")
    alpha = dust_layer(scan, clean, truth)
    labels, n = ndimage.label(truth == 255)
    session = open_session(args.model, SegmentOptions(), registry_root=args.registry)
    rng = np.random.default_rng(0)
    h, w = truth.shape
    rows = [("mid-grey", 0.0, *found_share(np.full((h, w, 3), 128.0, np.float32), alpha, labels, n, session, rng))]
    for path in load_backgrounds(args.photos):
        img = read_background(path)
        if img is None:
            continue
        photo = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32)
        texture = high_pass(photo)
        rows.append((os.path.relpath(path, os.path.commonpath(args.photos) if len(args.photos) > 1
                                     else os.path.dirname(args.photos[0])), texture,
                     *found_share(photo, alpha, labels, n, session, rng)))
    for name, texture, visible, share in sorted(rows, key=lambda r: r[1]):
        print(f"{name[:60]:60s} texture {texture:5.1f}  visible {visible:3d}  found {share:.2f}")


if __name__ == "__main__":
    main()

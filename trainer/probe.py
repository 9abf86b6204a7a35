"""How much dust pasted into a scene does a network find?  A diagnosis of misses.

    python -m trainer.probe WEIGHTS.pt IMAGE [IMAGE...] [--noise 0,8,14] [--crops 3]

Each IMAGE is scaled to the working size; from each of CROPS 512 px crops the probe pastes 30
flat grey discs (radius 2-5 px, 0.7x the luma under them: dim, desaturated dust), runs the network
(torch, the weights as trained) and reports the share of discs whose peak probability reaches
the spot threshold, first on the crop as it is, then with Gaussian noise of each NOISE std added
under the dust.  Also prints each crop's mean luma and high-pass energy (mean |luma - its 2 px
blur|), the measure that separated realdust-dev's missed forest floor from the training tiles.
"""
import argparse

import cv2
import numpy as np

from . import export, validate
from .synth import _luma, high_pass, to_working

CROP = 512
DISCS = 30
SHADE = 0.7
SPOT_THRESHOLD = 0.4


def paste_discs(img, rng):
    """(image with DISCS dim grey discs, their mask)."""
    out, mask = img.copy(), np.zeros(img.shape[:2], bool)
    for y, x in rng.integers(20, CROP - 20, (DISCS, 2)):
        disc = np.zeros(img.shape[:2], np.float32)
        cv2.circle(disc, (int(x), int(y)), int(rng.integers(2, 6)), 1.0, -1)
        disc = cv2.GaussianBlur(disc, (0, 0), 0.7)
        core = disc > 0.5
        tone = float(_luma(out[core]).mean()) * SHADE
        out += (tone - out) * disc[..., None]
        mask |= core
    return out, mask


def found_share(prob, mask):
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return float(np.mean([prob[labels == i].max() >= SPOT_THRESHOLD for i in range(1, n)]))


def probabilities(net, img):
    return validate.predict(net, np.clip(img + 0.5, 0, 255).astype(np.uint8)[None], "cpu", amp=False)[0]


def probe(net, image, noises, crops, rng):
    work = to_working(image).astype(np.float32)
    h, w = work.shape[:2]
    rows = []
    for _ in range(crops):
        y, x = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
        crop = work[y:y + CROP, x:x + CROP]
        row = {"y": y, "x": x, "luma": float(_luma(crop).mean()), "high_pass": high_pass(crop)}
        for sigma in noises:
            noisy = np.clip(crop + rng.normal(0, sigma, crop.shape[:2])[..., None], 0, 255) if sigma else crop
            dusty, mask = paste_discs(noisy.astype(np.float32), rng)
            row[f"found_noise_{sigma:g}"] = found_share(probabilities(net, dusty), mask)
        rows.append(row)
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--noise", default="0,8,14", help="noise std under the dust, comma-separated")
    ap.add_argument("--crops", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    net, _, _ = export.load_checkpoint(args.weights)
    noises = [float(v) for v in args.noise.split(",")]
    rng = np.random.default_rng(args.seed)
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        for row in probe(net, image, noises, args.crops, rng):
            found = "  ".join(f"noise {s:g}: {row[f'found_noise_{s:g}']:.2f}" for s in noises)
            print(f"{path} @ {row['y']},{row['x']}: luma {row['luma']:.0f}, high-pass {row['high_pass']:.1f}; "
                  f"found {found}")


if __name__ == "__main__":
    main()

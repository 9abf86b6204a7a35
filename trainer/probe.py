"""How much dust pasted into a scene does a network find?  A diagnosis of misses.

    python -m trainer.probe WEIGHTS.pt IMAGE [IMAGE...] [--noise 0,8,14] [--crops 3]
    python -m trainer.probe WEIGHTS.pt IMAGE... --gaps --shade 0.1 --noise 0 --blur 0,1,1.5,2

Each IMAGE is scaled to the working size; from each of CROPS 512 px crops the probe pastes 30
flat grey discs (radius 2-5 px, 0.7x the luma under them: dim, desaturated dust), runs the network
(torch, the weights as trained) and reports the share of discs whose peak probability reaches
the spot threshold, first on the crop as it is, then with Gaussian noise of each NOISE std added
under the dust.  Also prints each crop's mean luma and high-pass energy (mean |luma - its 2 px
blur|), the measure that separated realdust-dev's missed forest floor from the training tiles.

`--gaps` puts the discs in the crop's bright gaps (luma >= its 80th percentile: sky between
branches) and `--shade 0.1` makes them near-black: the easiest dust there is.  `--blur` repeats
each crop with the *scene* Gaussian-blurred (sigma in working px) before the discs go on, the
discs staying sharp.  Session 15, 0.4.0 on the busy validation photos: black discs in bright gaps
are found only once the scene around them is blurred (tables in trainer/README.md): the
scene's fine detail, not the dust, switches the detector off.
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
GAP_PERCENTILE = 80         # --gaps: discs go where the luma is at least this percentile of the crop


def disc_centres(img, rng, gaps=False):
    """DISCS centres 20 px or more from the border; with `gaps`, on the crop's brightest pixels."""
    if not gaps:
        return rng.integers(20, CROP - 20, (DISCS, 2))
    luma = _luma(img)[20:-20, 20:-20]
    bright = np.argwhere(luma >= np.percentile(luma, GAP_PERCENTILE)) + 20
    return bright[rng.choice(len(bright), DISCS, replace=len(bright) < DISCS)]


def paste_discs(img, rng, shade=SHADE, gaps=False):
    """(image with DISCS flat discs of `shade` x the luma under them, their mask)."""
    out, mask = img.copy(), np.zeros(img.shape[:2], bool)
    for y, x in disc_centres(img, rng, gaps):
        disc = np.zeros(img.shape[:2], np.float32)
        cv2.circle(disc, (int(x), int(y)), int(rng.integers(2, 6)), 1.0, -1)
        disc = cv2.GaussianBlur(disc, (0, 0), 0.7)
        core = disc > 0.5
        tone = float(_luma(out[core]).mean()) * shade
        out += (tone - out) * disc[..., None]
        mask |= core
    return out, mask


def found_share(prob, mask):
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    return float(np.mean([prob[labels == i].max() >= SPOT_THRESHOLD for i in range(1, n)]))


def probabilities(net, img):
    return validate.predict(net, np.clip(img + 0.5, 0, 255).astype(np.uint8)[None], "cpu", amp=False)[0]


def conditions(noises, blurs):
    """(label, noise std, blur sigma): each way the scene is altered before the discs go on."""
    return [(f"blur {b:g} noise {n:g}", n, b) for b in blurs for n in noises]


def probe(net, image, noises, crops, rng, blurs=(0.0,), shade=SHADE, gaps=False):
    """Per crop: position, luma, high-pass and the share of discs found under each condition."""
    work = to_working(image).astype(np.float32)
    h, w = work.shape[:2]
    rows = []
    for _ in range(crops):
        y, x = int(rng.integers(0, h - CROP + 1)), int(rng.integers(0, w - CROP + 1))
        crop = work[y:y + CROP, x:x + CROP]
        row = {"y": y, "x": x, "luma": float(_luma(crop).mean()), "high_pass": high_pass(crop), "found": {}}
        for label, sigma, blur in conditions(noises, blurs):
            scene = cv2.GaussianBlur(crop, (0, 0), blur) if blur else crop
            if sigma:
                scene = np.clip(scene + rng.normal(0, sigma, crop.shape[:2])[..., None], 0, 255)
            dusty, mask = paste_discs(scene.astype(np.float32), rng, shade, gaps)
            row["found"][label] = found_share(probabilities(net, dusty), mask)
        rows.append(row)
    return rows


def _floats(text):
    """A comma-separated list of numbers (an argparse type: a bad one is a usage error)."""
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of numbers") from None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("images", nargs="+")
    ap.add_argument("--noise", type=_floats, default="0,8,14", help="noise std under the dust, comma-separated")
    ap.add_argument("--blur", type=_floats, default="0", help="Gaussian blur of the scene (working px), comma-separated")
    ap.add_argument("--shade", type=float, default=SHADE, help="disc tone, x the luma under it")
    ap.add_argument("--gaps", action="store_true", help="discs in the crop's bright gaps")
    ap.add_argument("--crops", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    net = export.load_weights_or_exit(args.weights)
    rng = np.random.default_rng(args.seed)
    totals = {}
    for path in args.images:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: not a readable image")
        for row in probe(net, image, args.noise, args.crops, rng, args.blur, args.shade, args.gaps):
            found = "  ".join(f"{label}: {share:.2f}" for label, share in row["found"].items())
            print(f"{path} @ {row['y']},{row['x']}: luma {row['luma']:.0f}, high-pass {row['high_pass']:.1f}; "
                  f"found {found}")
            for label, share in row["found"].items():
                totals.setdefault(label, []).append(share)
    print("mean over crops: " + "  ".join(f"{label}: {np.mean(v):.2f}" for label, v in totals.items()))


if __name__ == "__main__":
    main()

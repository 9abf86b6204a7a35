"""Which local cue tells a set's dust from the scene's own dark spots?  No network involved.

    python -m trainer.cue_probe SET [--only NAME,NAME]

SET holds images/<name>.jpg and gt/<name>.png (255 dust, 128 don't care, 0 clean): realdust-dev
or held-out frames (`dustspot synth --scans`). For every dust object (its darkest pixel) and for
the scene's own dark spots (local minima of the 5x5 mean, darker than their 25x25 surroundings,
more than SCENE_GAP px from any truth) it measures a few cues at native resolution and prints,
per cue, the AUC of dust against scene spots (0.5: no better than chance):

- dark: 25x25 mean minus 5x5 mean (levels of 255); dark_rel: the same over the 25x25 mean;
- flat: minus the 5x5 luma std over the 25x25 one (flat patches score high);
- chroma_drop: chroma per luma of the 25x25 surroundings minus that of the 5x5 patch.  Dust
  darkens towards a near-neutral tone, so the patch keeps less colour than its surroundings;
  a shadow or a gap between leaves scales the light and keeps (or deepens) its colour.

Session 19, realdust-dev scan01 (the dim forest every model misses): dark 0.58, dark_rel 0.49,
flat 0.54, chroma_drop 0.90.  Its dust is as dark and as flat, relative to its surroundings, as
the forest's own shadows; only its colour gives it away (models/README.md).  A diagnosis: it
reads a set's truth, never chooses anything for a model.
"""
import argparse
import os

import cv2
import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

SCENE_GAP = 15              # px from any truth pixel: a scene spot is not the rim of a dust object
NEAR, AROUND = 2, 12        # box radii (px): the patch (5x5) and its surroundings (25x25)
SCENE_SAMPLE = 20000        # scene spots measured per image (a fixed random subset)


def _box(a, radius):
    return cv2.blur(a, (2 * radius + 1, 2 * radius + 1))


def _std(a, radius):
    return np.sqrt(np.maximum(_box(a * a, radius) - _box(a, radius) ** 2, 0))


def cue_maps(bgr):
    """{cue: per-pixel map}, larger meaning more dust-like (see the module docstring)."""
    img = cv2.GaussianBlur(bgr.astype(np.float32), (0, 0), 0.8)      # JPEG and grain, not structure
    b, g, r = cv2.split(img)
    luma = (b + g + r) / 3
    near, around = _box(luma, NEAR), _box(luma, AROUND)

    def chroma(radius):
        mean = [_box(c, radius) for c in (b, g, r)]
        return (np.max(mean, axis=0) - np.min(mean, axis=0)) / (_box(luma, radius) + 1)

    return {"dark": around - near,
            "dark_rel": (around - near) / (around + 1),
            "flat": -_std(luma, NEAR) / (_std(luma, AROUND) + 0.5),
            "chroma_drop": chroma(AROUND) - chroma(NEAR)}


def sample_points(bgr, truth, rng):
    """(dust points, scene points): each object's darkest pixel; the scene's dark local minima."""
    luma = cv2.GaussianBlur(bgr.astype(np.float32).mean(axis=2), (0, 0), 0.8)
    labels, n = ndimage.label(truth == 255)
    dust = [tuple(int(v) for v in p) for p in ndimage.minimum_position(luma, labels, range(1, n + 1))] if n else []
    near = _box(luma, NEAR)
    far = ndimage.distance_transform_edt(truth == 0) > SCENE_GAP
    minima = (near == ndimage.minimum_filter(near, 2 * NEAR + 5)) & far & (_box(luma, AROUND) - near > 2)
    ys, xs = np.nonzero(minima)
    pick = rng.choice(len(ys), min(SCENE_SAMPLE, len(ys)), replace=False) if len(ys) else []
    return dust, [(int(ys[i]), int(xs[i])) for i in pick], int(minima.sum())


def auc(positive, negative):
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranks = rankdata(np.concatenate([positive, negative]))
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def probe(bgr, truth, seed=0):
    """{"dust": n, "scene_spots_per_mp": x, cue: AUC, ...} for one image."""
    dust, scene, count = sample_points(bgr, truth, np.random.default_rng(seed))
    out = {"dust": len(dust), "scene_spots_per_mp": count / (truth.size / 1e6)}
    if not dust or not scene:
        return out
    for name, values in cue_maps(bgr).items():
        out[name] = auc(np.array([values[p] for p in dust]), np.array([values[p] for p in scene]))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", help="a folder with images/ and gt/ (realdust-dev, or `dustspot synth --scans`)")
    ap.add_argument("--only", default=None, help="comma-separated image names (without extension)")
    args = ap.parse_args(argv)
    names = sorted(os.path.splitext(n)[0] for n in os.listdir(os.path.join(args.set, "gt")))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    for name in names:
        bgr = cv2.imread(os.path.join(args.set, "images", name + ".jpg"), cv2.IMREAD_COLOR)
        truth = cv2.imread(os.path.join(args.set, "gt", name + ".png"), cv2.IMREAD_GRAYSCALE)
        if bgr is None or truth is None:
            raise SystemExit(f"{name}: needs images/{name}.jpg and gt/{name}.png")
        result = probe(bgr, truth)
        cues = "  ".join(f"{k} {v:.3f}" for k, v in result.items() if k not in ("dust", "scene_spots_per_mp"))
        print(f"{name}: {result['dust']} dust objects, {result['scene_spots_per_mp']:.0f} scene spots per MP  "
              f"AUC {cues or '-'}")


if __name__ == "__main__":
    main()

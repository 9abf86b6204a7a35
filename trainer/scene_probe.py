"""In which scenes does a network miss dust?  Recall per photo, against how busy the photo is.

    python -m trainer.scene_probe WEIGHTS.pt BACKGROUNDS... [--split valid|train|all] [--jsonl OUT]

Each background (one per photo, `synth.load_backgrounds`; by default the validation photos
only) is scaled to the working size, dusted whole by the generator (`synth.dust_scan`, dark
dust, a seed per photo) and run through the network (torch, the weights as trained). Per photo:
objects, share found (peak probability >= the spot threshold), the photo's mean luma and
texture (`synth.scene_texture`). Then the shares by texture band. The truth is realdust-dev's
rule (dust changing luma by >= 8 levels counts, even where texture hides it), so busy photos'
shares stay low even for a network that finds all the dust one can see there. Inference in
bf16 on CPUs that have it (as the deployed OpenVINO model runs), so peaks near the threshold
can differ slightly from `trainer.probe`'s fp32.

Why: realdust-dev's scan01 (a forest floor, texture 8) loses 344 of its 345 objects, and the
same blindness shows on the generator's own dust: dustspot-unet 0.4.0 found 10 % of it on photos
with texture >= 6 and 66 % on photos below 2 (trainer/README.md). The frames
(`dustspot synth --scans`) mix both kinds of scene; this separates them.
"""
import argparse
import json

import numpy as np
from scipy import ndimage

from . import data, export, synth, validate
from .probe import SPOT_THRESHOLD

TEXTURE_BANDS = (0.0, 2.0, 4.0, 6.0, float("inf"))
MIN_OBJECTS = 20          # photos where the dust is nearly all invisible say nothing


def probe_photo(net, photo, seed):
    """Dust one working-size photo with the generator; (objects, share found)."""
    scan, truth = synth.dust_scan(photo, np.random.default_rng(seed), dark=True)
    h, w = scan.shape[:2]
    padded = np.pad(scan, ((0, -h % 32), (0, -w % 32), (0, 0)), mode="reflect")
    prob = validate.predict(net, padded[None], "cpu", amp=True)[0][:h, :w]
    labels, n = ndimage.label(truth == synth.DUST)
    if n == 0:
        return 0, None
    peaks = ndimage.maximum(prob, labels, range(1, n + 1))
    return n, float(np.mean(peaks >= SPOT_THRESHOLD))


def by_texture(rows):
    """[(band label, photos, mean share found)] over the photos with enough objects."""
    out = []
    for lo, hi in zip(TEXTURE_BANDS, TEXTURE_BANDS[1:]):
        shares = [r["found"] for r in rows if lo <= r["texture"] < hi and r["objects"] >= MIN_OBJECTS]
        label = f"texture {lo:g}-{hi:g}" if hi != float("inf") else f"texture >= {lo:g}"
        out.append((label, len(shares), float(np.mean(shares)) if shares else None))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("backgrounds", nargs="+")
    ap.add_argument("--split", choices=("valid", "train", "all"), default="valid")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jsonl", help="also write one JSON line per photo here")
    args = ap.parse_args(argv)
    net = export.load_weights_or_exit(args.weights)
    paths = synth.load_backgrounds(args.backgrounds)
    if args.split != "all":
        train, valid = data.split_backgrounds(paths)
        paths = valid if args.split == "valid" else train
    rows = []
    for i, path in enumerate(paths):
        photo = synth.read_background(path)
        if photo is None:
            continue
        photo = synth.to_working(photo)
        objects, found = probe_photo(net, photo, args.seed + i)
        row = {"photo": path, "scene": synth.scene_name(path), "objects": objects, "found": found,
               "luma": float(synth._luma(photo.astype(np.float32)).mean()),
               "texture": synth.high_pass(photo)}          # = scene_texture: photo is working size
        rows.append(row)
        print(f"{row['scene']:40s} texture {row['texture']:5.1f}  luma {row['luma']:5.1f}  objects "
              f"{objects:5d}  found {found if found is None else round(found, 3)}", flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as f:
                f.write(json.dumps(row) + "\n")
    for label, photos, share in by_texture(rows):
        print(f"{label:16s} photos {photos:3d}  found {'-' if share is None else f'{share:.3f}'}")


if __name__ == "__main__":
    main()

"""How the spot colour test (shared/neutral.py) splits a model's spots on a labelled set.

    python -m trainer.neutral_probe SET [--model REF] [--registry DIR] [--tolerance L]

SET holds images/<name> and gt/<name>.png (255 dust, 128 don't care, 0 clean): held-out frames
(`dustspot synth --scans`) or realdust-dev. The model runs once per image at its recommended
working size; its spots are found at its recommended threshold, spot threshold and minimum area,
and each is measured exactly as the pipeline measures it (before the trim). Printed per
polarity (dark / bright against the ring) and kind (touching dust; false on a dusty image;
false on a clean image): the count, the median departure from a neutral blend (levels of 255)
and how many the rule drops at the tolerance (default: defaults.NEUTRAL). A diagnosis: it
reads the set's truth and chooses nothing (session 24, models/README.md).
"""
import argparse
import os
from collections import defaultdict

import cv2
import numpy as np

from shared import defaults
from shared.neutral import departures, is_tinted
from shared.spots import find_spots, threshold_mask


def measure(frames, truths, options):
    """{(polarity, kind): [departure, ...]} and the matching contrasts, for every measured spot."""
    found = defaultdict(list)
    for frame in frames:
        truth = truths[frame.name]
        mask = threshold_mask(frame.prob8, options.threshold)
        thresholded = mask.copy()
        spots, mask = find_spots(mask, frame.prob8, options.min_area, max(options.threshold, options.spot_threshold))
        clean = not (truth > 0).any()
        for _, (y0, y1, x0, x1), own, departure, contrast in departures(mask, frame.pixels, spots, thresholded):
            under = truth[y0:y1, x0:x1][own]
            kind = "clean" if clean else "dust" if (under == 255).any() else "dont-care" if (under == 128).any() else "false"
            found[("dark" if contrast < 0 else "bright", kind)].append((departure, contrast))
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("set")
    parser.add_argument("--model", default=None, help="model reference (default: the bundled default)")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--tolerance", type=float, default=defaults.NEUTRAL)
    args = parser.parse_args(argv)
    from shared.pipeline import SegmentOptions
    from shared.registry import resolve

    from .tune import frame_probabilities
    options = SegmentOptions().resolved(resolve(args.model, args.registry).manifest)
    frames = frame_probabilities(args.model, args.set, args.registry, options=options)
    truths = {f.name: cv2.imread(os.path.join(args.set, "gt", f.name + ".png"), cv2.IMREAD_GRAYSCALE) for f in frames}
    found = measure(frames, truths, options)
    print(f"{args.set}: {len(frames)} images, threshold {options.threshold}, spot threshold "
          f"{max(options.threshold, options.spot_threshold)}, min area {options.min_area}, tolerance {args.tolerance:g}")
    print(f"{'polarity':8s} {'kind':10s} {'spots':>6s} {'median departure':>17s} {'dropped':>8s}")
    for (polarity, kind), rows in sorted(found.items()):
        dropped = sum(is_tinted(d, c, args.tolerance) for d, c in rows)
        print(f"{polarity:8s} {kind:10s} {len(rows):6d} {float(np.median([d for d, _ in rows])):17.1f} {dropped:8d}")


if __name__ == "__main__":
    main()

"""A model's post-processing (threshold, spot threshold, minimum spot area), chosen on held-out
frames and never on realdust-dev.

The frames are whole scans with ground truth (`dustspot synth --scans`, or a user's own
labelled scans): the model runs once per frame through the real pipeline (its probability
map at native size), then every candidate setting is applied with the pipeline's own
post-processing (shared.spots.spots_and_mask, the spot trim of shared.trim and the colour
test of shared.neutral included: given, not swept) and scored with shared.metrics, the project's copy of
../shared/eval/score.py. numpy + OpenCV + OpenVINO: no torch.

Objective: the harmonic mean of object recall, object precision and pixel Dice (the three
acceptance figures), among settings that keep false positives on the clean frames at or
under MAX_CLEAN_FP_PER_MP (all settings, when none does).
"""
import glob
import os
from dataclasses import replace
from typing import NamedTuple

import cv2
import numpy as np

from shared import defaults
from shared.metrics import DustScore, Truth
from shared.spots import find_spots, spots_and_mask, threshold_mask

# wide: a loss with hard-negative mining pulls probabilities down (best thresholds ~0.1-0.3)
THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
SPOT_THRESHOLDS = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)   # 0: no hysteresis (the mask threshold)
MIN_AREAS = (1, 4)                            # native pixels
MAX_CLEAN_FP_PER_MP = 2.0                         # the acceptance bound on clean frames


class Frame(NamedTuple):
    name: str
    prob8: np.ndarray        # the model's probability map at native size
    truth: Truth
    pixels: np.ndarray       # the decoded scan: the spot trim (shared/trim.py) reads it


def frame_probabilities(model_ref, frames_dir, registry_root=None, engine_settings=None, options=None):
    """[Frame] for FRAMES/images/* with FRAMES/gt/<stem>.png.

    `options` (working size, tiles; default: the model's) must be those the model will run with.
    """
    from shared.imageio import read_scan
    from shared.pipeline import SegmentOptions, open_session, segment
    session = open_session(model_ref, options or SegmentOptions(), engine_settings, registry_root)
    # the raw probability map: no threshold, no spot filtering
    session.options = replace(session.options, threshold=1.0, spot_threshold=1.0)
    frames = []
    for path in sorted(glob.glob(os.path.join(frames_dir, "images", "*"))):
        stem = os.path.splitext(os.path.basename(path))[0]
        truth = cv2.imread(os.path.join(frames_dir, "gt", stem + ".png"), cv2.IMREAD_GRAYSCALE)
        if truth is None:
            continue
        pixels = read_scan(path).pixels
        frames.append(Frame(stem, segment(pixels, session).prob8, Truth(truth), pixels))
    if not frames:
        raise ValueError(f"{frames_dir}: no images/<name> with gt/<name>.png")
    return frames


def score(frames, threshold, spot_threshold=0.0, min_area=1, masks=None, trim=defaults.TRIM, trimmed=None,
          neutral=defaults.NEUTRAL) -> dict:
    """Metrics of one setting, spots tested and trimmed as the pipeline does (`trim`: its share,
    `neutral`: the colour test's tolerance; 0 off). `masks` (the frames thresholded at
    `threshold`) and `trimmed` (every spot of those masks tested and trimmed: both depend on the
    threshold alone) save redoing that per setting."""
    if masks is None:
        masks = [threshold_mask(frame.prob8, threshold) for frame in frames]
    total = DustScore()
    for i, (frame, mask) in enumerate(zip(frames, masks)):
        if trimmed is None:
            kept = spots_and_mask(frame.prob8, threshold, spot_threshold, min_area, trim, frame.pixels, mask.copy(),
                                  neutral)[1]
        else:       # the spots this setting keeps, at their trimmed extent
            kept = find_spots(mask.copy(), frame.prob8, min_area, max(threshold, spot_threshold))[1] & trimmed[i]
        total.add(frame.truth, kept)
    return total.result()


def _all_spots_trimmed(frames, masks, threshold, trim, neutral):
    return [spots_and_mask(frame.prob8, threshold, 0.0, 1, trim, frame.pixels, mask.copy(), neutral)[1]
            for frame, mask in zip(frames, masks)]


def objective(metrics: dict) -> float:
    parts = [metrics["object_recall"], metrics["object_precision"], metrics["pixel_dice"]]
    if any(p is None for p in parts):                # no dusty frame: nothing to tune for
        return 0.0
    return 0.0 if min(parts) <= 0 else len(parts) / sum(1 / p for p in parts)


def tune(frames, progress=None, trim=defaults.TRIM, neutral=defaults.NEUTRAL) -> dict:
    """Best setting and the full table: {"best": {...settings, metrics}, "table": [...]}."""
    table = []
    for threshold in THRESHOLDS:
        masks = [threshold_mask(frame.prob8, threshold) for frame in frames]    # once per threshold
        trimmed = _all_spots_trimmed(frames, masks, threshold, trim, neutral) if trim or neutral else None
        for spot_threshold in SPOT_THRESHOLDS:
            if 0 < spot_threshold <= threshold:
                continue                                   # same as no hysteresis
            for min_area in MIN_AREAS:
                m = score(frames, threshold, spot_threshold, min_area, masks, trim, trimmed, neutral)
                row = {"threshold": threshold, "spot_threshold": max(threshold, spot_threshold),
                       "min_area": min_area, "trim": trim, "neutral": neutral, "objective": round(objective(m), 4),
                       **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()}}
                table.append(row)
                if progress:
                    progress(row)
    measured = any(frame.truth.clean for frame in frames)
    clean = [r for r in table if not measured or r["clean_fp_per_mp"] <= MAX_CLEAN_FP_PER_MP]
    best = max(clean or table, key=lambda r: r["objective"])
    return {"best": best, "table": table, "frames": [frame.name for frame in frames],
            "clean_bound_met": bool(clean) if measured else None}      # None: no clean frame


def best_of(results: dict):
    """The key of the best of several tune() results (e.g. one per working size), by tune's own
    rule: results whose best setting meets the clean-frame bound first, then the objective."""
    return max(results, key=lambda k: (results[k]["clean_bound_met"] is not False,
                                       results[k]["best"]["objective"]))

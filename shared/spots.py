"""From probabilities to a binary mask, and from a mask to a list of spots with scores."""
import math

import cv2
import numpy as np

from .neutral import drop_tinted_spots
from .trim import trim_spots


def spots_and_mask(prob8, threshold, spot_threshold=0.0, min_area=1, trim=0.0, pixels=None, mask=None, neutral=0.0):
    """The post-processing of segment, rethreshold and tune: threshold, drop the spots without
    a confident pixel or too small, drop those whose colour no dust makes (shared/neutral.py,
    `neutral` levels of tolerance), trim the rest to the scan's dust pixels (shared/trim.py).
    `pixels` is the decoded scan, needed when `trim` or `neutral` > 0. `mask`:
    prob8 already thresholded at `threshold`, edited in place. Returns (spots, 0/255 mask)."""
    if mask is None:
        mask = threshold_mask(prob8, threshold)
    thresholded = mask.copy() if trim or neutral else None
    spots, mask = find_spots(mask, prob8, min_area, max(threshold, spot_threshold))
    if neutral:
        spots, mask = drop_tinted_spots(mask, pixels, spots, neutral, thresholded)
    if trim:
        mask = trim_spots(mask, pixels, spots, trim, thresholded)      # the same spots, trimmed
    return spots, mask


def threshold_mask(prob8: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 mask where prob8 / 255 >= threshold (the same rule for segment and rethreshold)."""
    level = math.ceil(threshold * 255 - 1e-9)
    _, mask = cv2.threshold(prob8, level - 1, 255, cv2.THRESH_BINARY)
    return mask


# Labelling a whole mask costs per pixel (cv2.connectedComponentsWithStats: 0.25 s on an almost
# empty 36 MP mask, most of the seed-geometry "spots" stage); labelling crops around the spots
# costs per spot and per pixel of its crop. find_spots picks the cheaper by this cost model,
# measured on this project's 2-core machine (session 7): ~7 ns per pixel labelled, ~60 us per crop.
CELL = 4                          # occupancy grid: which CELL x CELL blocks hold mask pixels
WHOLE_MASK_S_PER_PIXEL = 7e-9
CROP_S = 6e-5


def find_spots(mask: np.ndarray, prob8: np.ndarray, min_area: int = 1,
               min_peak: float = 0.0) -> tuple[list[dict], np.ndarray]:
    """Spots of an 8-bit 0/255 mask, 8-connected, scored by their peak probability.

    Components smaller than `min_area` pixels, or whose peak probability is below
    `min_peak` (hysteresis: a spot needs one confident pixel, its extent comes from the
    lower mask threshold), are removed from the mask. Returns the spot list (ordered by
    bounding-box top, then left) and the mask.
    """
    mask = np.ascontiguousarray(mask)            # edited in place
    crops = _crops_around_spots(mask)
    if crops is None:
        spots = _label(mask, prob8, min_area, min_peak, (0, 0), mask.shape)
    else:
        seen, spots = set(), []
        for y0, y1, x0, x1 in crops:
            for spot in _label(mask[y0:y1, x0:x1], prob8[y0:y1, x0:x1], min_area, min_peak,
                               (x0, y0), mask.shape):
                key = (*spot["bbox"], spot["area"])      # crops overlap: a spot may be in two
                if key not in seen:
                    seen.add(key)
                    spots.append(spot)
    spots.sort(key=lambda s: (s["bbox"][1], s["bbox"][0]))
    return spots, mask


def _crops_around_spots(mask):
    """[(y0, y1, x0, x1)] native crops, each holding whole components with a pixel to spare, or
    None when labelling the whole mask is cheaper.

    A component's pixels fall in 8-connected occupied cells, so it lies inside the cell box of
    one connected group of cells; one pixel of margin lets _label tell it from a component that
    the crop cuts (which touches the crop's edge and is judged in its own crop)."""
    h, w = mask.shape
    ch, cw = -(-h // CELL), -(-w // CELL)
    # 255 wherever the mask is set, whatever its value (cv2.compare with a scalar fails on tiny masks)
    _, foreground = cv2.threshold(mask, 0, 255, cv2.THRESH_BINARY)
    if (ch * CELL, cw * CELL) != (h, w):
        foreground = cv2.copyMakeBorder(foreground, 0, ch * CELL - h, 0, cw * CELL - w,
                                        cv2.BORDER_CONSTANT, value=0)
    # an integer INTER_AREA shrink averages whole blocks: any 255 in 16 pixels stays > 0
    occupied = cv2.resize(foreground, (cw, ch), interpolation=cv2.INTER_AREA)
    count, _, stats, _ = cv2.connectedComponentsWithStats(occupied, connectivity=8)
    boxes = stats[1:, :4].astype(np.int64) * CELL
    x0 = np.maximum(boxes[:, 0] - 1, 0)
    y0 = np.maximum(boxes[:, 1] - 1, 0)
    x1 = np.minimum(boxes[:, 0] + boxes[:, 2] + 1, w)
    y1 = np.minimum(boxes[:, 1] + boxes[:, 3] + 1, h)
    # crops cost their pixels too: a long hair's crop is its whole bounding box
    crops_s = (count - 1) * CROP_S + float(((x1 - x0) * (y1 - y0)).sum()) * WHOLE_MASK_S_PER_PIXEL
    if crops_s >= h * w * WHOLE_MASK_S_PER_PIXEL:
        return None
    return list(zip(y0.tolist(), y1.tolist(), x0.tolist(), x1.tolist()))


def _label(mask, prob8, min_area, min_peak, origin, full_shape):
    """find_spots on one crop (or the whole mask) at `origin` (x, y) of a `full_shape` mask:
    components touching a crop edge inside the image are left alone and not reported."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return []
    # per-component peak, over the mask's pixels only (vectorised: no loop over components)
    inside = mask > 0
    peak = np.zeros(count, np.uint8)
    np.maximum.at(peak, labels[inside], prob8[inside])
    level = math.ceil(min_peak * 255 - 1e-9)
    judged = np.ones(count, bool)
    judged[0] = False
    (ox, oy), (h, w) = origin, mask.shape
    left, top = stats[:, 0], stats[:, 1]
    right, bottom = left + stats[:, 2], top + stats[:, 3]
    if ox > 0:
        judged &= left > 0
    if oy > 0:
        judged &= top > 0
    if ox + w < full_shape[1]:
        judged &= right < w
    if oy + h < full_shape[0]:
        judged &= bottom < h
    keep = judged & (stats[:, cv2.CC_STAT_AREA] >= min_area) & (peak >= level)
    dropped = judged & ~keep
    if dropped.any():
        mask[dropped[labels]] = 0
    # whole-array conversions (tolist) rather than per-element int()/float(): a noisy scan has
    # thousands of spots and the per-element version cost more than the labelling itself
    kept = np.flatnonzero(keep)
    boxes = (stats[kept, :4] + (ox, oy, 0, 0)).tolist()
    areas = stats[kept, cv2.CC_STAT_AREA].tolist()
    centres = np.round(centroids[kept] + (ox, oy), 1).tolist()
    scores = np.round(peak[kept] / 255.0, 3).tolist()
    return [{"bbox": b, "area": a, "centroid": c, "score": s}
            for b, a, c, s in zip(boxes, areas, centres, scores)]

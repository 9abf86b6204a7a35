"""From probabilities to a binary mask, and from a mask to a list of spots with scores."""
import math

import cv2
import numpy as np


def threshold_mask(prob8: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 mask where prob8 / 255 >= threshold (the same rule for segment and rethreshold)."""
    level = math.ceil(threshold * 255 - 1e-9)
    _, mask = cv2.threshold(prob8, level - 1, 255, cv2.THRESH_BINARY)
    return mask


def find_spots(mask: np.ndarray, prob8: np.ndarray, min_area: int = 1,
               min_peak: float = 0.0) -> tuple[list[dict], np.ndarray]:
    """Spots of an 8-bit 0/255 mask, 8-connected, scored by their peak probability.

    Components smaller than `min_area` pixels, or whose peak probability is below
    `min_peak` (hysteresis: a spot needs one confident pixel, its extent comes from the
    lower mask threshold), are removed from the mask. Returns the spot list and the mask.
    """
    mask = np.ascontiguousarray(mask)            # edited in place through a flat view
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return [], mask
    # per-component peak, over the mask's pixels only (vectorised: no loop over components)
    inside = np.flatnonzero(mask)
    owner = labels.ravel()[inside]
    peak = np.zeros(count, np.uint8)
    np.maximum.at(peak, owner, prob8.ravel()[inside])
    level = math.ceil(min_peak * 255 - 1e-9)
    keep = (stats[:, cv2.CC_STAT_AREA] >= min_area) & (peak >= level)
    keep[0] = False
    dropped = ~keep[owner]
    if dropped.any():
        mask.ravel()[inside[dropped]] = 0
    # whole-array conversions (tolist) rather than per-element int()/float(): a noisy scan has
    # thousands of spots and the per-element version cost more than the labelling itself
    kept = np.flatnonzero(keep)
    boxes = stats[kept, :4].tolist()
    areas = stats[kept, cv2.CC_STAT_AREA].tolist()
    centres = np.round(centroids[kept], 1).tolist()
    scores = np.round(peak[kept] / 255.0, 3).tolist()
    spots = [{"bbox": b, "area": a, "centroid": c, "score": s}
             for b, a, c, s in zip(boxes, areas, centres, scores)]
    return spots, mask

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
    spots = [{"bbox": [int(v) for v in stats[i, :4]], "area": int(stats[i, cv2.CC_STAT_AREA]),
              "centroid": [round(float(centroids[i][0]), 1), round(float(centroids[i][1]), 1)],
              "score": round(float(peak[i]) / 255.0, 3)}
             for i in np.flatnonzero(keep)]
    return spots, mask

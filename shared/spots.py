"""From probabilities to a binary mask, and from a mask to a list of spots with scores."""
import math

import cv2
import numpy as np


def threshold_mask(prob8: np.ndarray, threshold: float) -> np.ndarray:
    """0/255 mask where prob8 / 255 >= threshold (the same rule for segment and rethreshold)."""
    level = math.ceil(threshold * 255 - 1e-9)
    _, mask = cv2.threshold(prob8, level - 1, 255, cv2.THRESH_BINARY)
    return mask


def find_spots(mask: np.ndarray, prob8: np.ndarray, min_area: int = 1) -> tuple[list[dict], np.ndarray]:
    """Spots of an 8-bit 0/255 mask, 8-connected, scored by their peak probability.

    Returns the spot list and the mask with components under `min_area` removed.
    """
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
    spots = []
    for i in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[i])
        if area < min_area:
            mask[y:y + h, x:x + w][labels[y:y + h, x:x + w] == i] = 0
            continue
        inside = labels[y:y + h, x:x + w] == i
        score = float(prob8[y:y + h, x:x + w][inside].max()) / 255.0
        spots.append({"bbox": [x, y, w, h], "area": area,
                      "centroid": [round(float(centroids[i][0]), 1), round(float(centroids[i][1]), 1)],
                      "score": round(score, 3)})
    return spots, mask

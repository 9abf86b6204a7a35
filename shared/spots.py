"""From a binary mask to a list of spots (connected components) with their scores."""
import cv2
import numpy as np


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

"""Per-spot views of a scan shared by the post-processing steps that read the scan itself
(shared/trim.py, shared/neutral.py): a crop around each spot, the spot's own pixels in it, and
the clean ring around them that the spot is measured against."""
import cv2
import numpy as np


def disk(radius):
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)


def spot_crops(mask, spots, margin, max_area=None, max_box=None):
    """For each spot dict of `spots` (find_spots' list for `mask`), in order:
    (spot, (y0, y1, x0, x1), own) where own (bool) marks the spot's pixels in the crop
    mask[y0:y1, x0:x1] grown by `margin` px. Spots over `max_area` px, or whose bounding box
    is over `max_box` px (a long scratch across a whole scan), are skipped."""
    height, width = mask.shape
    for spot in spots:
        x, y, w, h = spot["bbox"]
        if (max_area is not None and spot["area"] > max_area) or (max_box is not None and w * h > max_box):
            continue
        y0, y1, x0, x1 = max(0, y - margin), min(height, y + h + margin), max(0, x - margin), min(width, x + w + margin)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask[y0:y1, x0:x1], connectivity=8)
        own = np.flatnonzero((stats[:, 0] == x - x0) & (stats[:, 1] == y - y0) & (stats[:, 2] == w)
                             & (stats[:, 3] == h) & (stats[:, cv2.CC_STAT_AREA] == spot["area"]))
        own = own[own > 0]
        if own.size:
            yield spot, (y0, y1, x0, x1), labels == own[0]


MIN_RING_PIXELS = 4         # fewer clean pixels around a spot: nothing to measure it against


def ring(own, clean, inner, outer):
    """The pixels `inner`-`outer` px around the spot `own` that are `clean` (under the threshold),
    or None when there are fewer than MIN_RING_PIXELS of them."""
    spot = own.astype(np.uint8)
    around = (cv2.dilate(spot, disk(outer)) > 0) & ~(cv2.dilate(spot, disk(inner)) > 0) & clean
    return around if np.count_nonzero(around) >= MIN_RING_PIXELS else None

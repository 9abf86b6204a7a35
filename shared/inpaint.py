"""Healing the detected spots: OpenCV inpainting chosen per spot by its shape.

Telea's fast-marching method suits compact specks; the Navier-Stokes method follows
isophotes along thin, elongated damage (hairs, scratches) better (OpenCV's photo module,
cv2.INPAINT_TELEA / cv2.INPAINT_NS). Each spot is healed in its own padded window, so the
cost follows the dust, not the scan size. The mask is dilated by a small margin first:
a speck's soft edge lies partly outside the thresholded mask.
"""
import cv2
import numpy as np

MARGIN = 2           # px of dilation around each spot
RADIUS = 3           # inpainting neighbourhood
ELONGATED = 4.0      # long side / short side of the rotated box above which a spot is a line


def is_elongated(component: np.ndarray) -> bool:
    points = cv2.findNonZero(component)
    (_, _), (w, h), _ = cv2.minAreaRect(points)
    return max(w, h) >= ELONGATED * max(1.0, min(w, h))


def _inpaint(window: np.ndarray, hole: np.ndarray, method: int) -> np.ndarray:
    if window.dtype == np.uint8 or window.ndim == 2:
        return cv2.inpaint(window, hole, RADIUS, method)
    # OpenCV inpaints 16-bit images one channel at a time.
    return np.dstack([cv2.inpaint(np.ascontiguousarray(window[:, :, c]), hole, RADIUS, method)
                      for c in range(window.shape[2])])


def heal(pixels: np.ndarray, mask: np.ndarray, spots: list) -> np.ndarray:
    """A copy of `pixels` (same dtype and channels) with every spot inpainted."""
    out = pixels.copy()
    h, w = mask.shape
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MARGIN + 1, 2 * MARGIN + 1))
    pad = MARGIN + 2 * RADIUS + 2
    for spot in spots:
        x, y, bw, bh = spot["bbox"]
        x0, y0, x1, y1 = max(0, x - pad), max(0, y - pad), min(w, x + bw + pad), min(h, y + bh + pad)
        hole = cv2.dilate(mask[y0:y1, x0:x1], kernel)
        method = cv2.INPAINT_NS if is_elongated(mask[y:y + bh, x:x + bw]) else cv2.INPAINT_TELEA
        out[y0:y1, x0:x1] = _inpaint(out[y0:y1, x0:x1], hole, method)
    return out

"""Narrow each spot of a mask to the pixels the scan itself shows as dust.

The network's probabilities are smooth: thresholded low enough to catch faint specks, a spot's
mask spreads a ring of clean pixels around the speck (realdust-dev with 0.4.1: pixel precision
0.56 at recall 0.64). The scan knows better where a speck ends: its contrast against the clean
ring around the spot falls off at the speck's edge. So a spot keeps the pixels whose contrast is
at least `fraction` of the strongest contrast within `radius` px (a square window: a local peak,
so a faint speck merged into one spot with a dark one keeps its own core), on the spot's
polarity (darker or brighter than the ring, whichever it departs from more).

A spot is never split or dropped: the pieces that survive are joined again along short paths
inside the spot's original pixels, so the spot list, the object counts and every decision made
on the probabilities stay as they were; only the extent changes.
"""
from collections import deque

import cv2
import numpy as np

from . import defaults
from .spot_pixels import ring as clean_ring
from .spot_pixels import spot_crops

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
_BLUR_SIGMA = 0.7          # px: grain and JPEG blocks, not the speck's edge


def _luma(pixels):
    luma = pixels.astype(np.float32)
    if luma.ndim == 3:
        luma = luma.mean(axis=2)
    return cv2.GaussianBlur(luma, (0, 0), _BLUR_SIGMA)


def _reconnect(keep, spot):
    """`keep` plus short 8-connected paths inside `spot` that join its pieces into one (a
    breadth-first search from the first piece; each piece joins by its path from what is
    already joined)."""
    count, pieces = cv2.connectedComponents(keep.astype(np.uint8), connectivity=8)
    if count <= 2:
        return keep
    h, w = spot.shape
    out = keep.copy()
    flat = pieces.ravel()                      # each piece's pixels, grouped once
    members = np.flatnonzero(flat)
    members = members[np.argsort(flat[members], kind="stable")]
    starts = np.searchsorted(flat[members], np.arange(count + 1))
    joined = np.zeros(count, bool)
    joined[1] = True
    parent = np.full(spot.shape, -1, np.int64)          # -1: reached from a joined pixel itself
    seen = pieces == 1
    frontier = deque(zip(*np.nonzero(seen)))
    left = count - 2
    while frontier and left:
        y, x = frontier.popleft()
        for dy, dx in _NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if not (0 <= ny < h and 0 <= nx < w) or seen[ny, nx] or not spot[ny, nx]:
                continue
            piece = pieces[ny, nx]
            if piece and not joined[piece]:
                cy, cx = y, x                            # the path back to what is joined
                while not out[cy, cx]:
                    out[cy, cx] = True
                    cy, cx = divmod(int(parent[cy, cx]), w)
                joined[piece] = True
                left -= 1
                ys, xs = np.divmod(members[starts[piece]:starts[piece + 1]], w)
                seen[ys, xs] = True
                frontier.extend(zip(ys.tolist(), xs.tolist()))
            elif not piece:
                seen[ny, nx] = True
                parent[ny, nx] = y * w + x
                frontier.append((ny, nx))
    return out


def _trim_one(clean, luma, spot, fraction, radius, ring):
    """The trimmed spot (bool, crop-sized) of one component `spot` (bool) of a crop where
    `clean` (bool) marks the pixels under the threshold."""
    around = clean_ring(spot, clean, *ring)
    if around is None:                              # no clean surroundings to measure against
        return spot
    contrast = luma - np.median(luma[around])     # > 0: brighter than the ring
    inside = contrast[spot]
    if -inside.min() >= inside.max():               # darker: a positive's dust
        contrast = -contrast
    local_peak = cv2.dilate(np.where(spot, contrast, -np.inf).astype(np.float32),
                            np.ones((2 * radius + 1,) * 2, np.uint8))      # max filter
    keep = spot & (contrast > 0) & (contrast >= fraction * local_peak)
    if not keep.any():
        return spot
    return _reconnect(keep, spot)


def trim_spots(mask, pixels, spots, fraction=defaults.TRIM, thresholded=None, radius=defaults.TRIM_RADIUS,
               ring=defaults.TRIM_RING):
    """Narrows every spot of `mask` (0/255, native size, edited in place) that find_spots listed
    in `spots` to its dust pixels in `pixels` (the decoded scan); returns the mask. fraction 0: off.

    Each spot dict is updated to its trimmed extent (bbox, area, centroid); its score, the peak
    probability the spot was kept for, stays. The ring a spot is measured against is the scan
    under the threshold: `thresholded`, the mask before find_spots dropped any spot (default: a
    copy of `mask` as given). So a spot's trim depends on the threshold alone, not on which other
    spots the spot threshold or minimum area keep (trainer/tune.py trims once per threshold).
    Spots over TRIM_MAX_AREA px are left as they are."""
    if fraction <= 0:
        return mask
    if pixels is None or pixels.shape[:2] != mask.shape:
        raise ValueError(f"the spot trim needs the scan the mask was made from: mask {mask.shape[::-1]} px, "
                         f"scan {None if pixels is None else pixels.shape[1::-1]}")
    if thresholded is None:
        thresholded = mask.copy()
    margin = ring[1] + 3                            # the ring, and the blur's reach beyond it
    for spot, (y0, y1, x0, x1), spot_pixels in spot_crops(mask, spots, margin, defaults.TRIM_MAX_AREA):
        crop = mask[y0:y1, x0:x1]
        kept = _trim_one(thresholded[y0:y1, x0:x1] == 0, _luma(pixels[y0:y1, x0:x1]), spot_pixels,
                         fraction, radius, ring)
        crop[spot_pixels & ~kept] = 0
        ys, xs = np.nonzero(kept)
        spot.update(bbox=[x0 + int(xs.min()), y0 + int(ys.min()), int(xs.max() - xs.min()) + 1,
                          int(ys.max() - ys.min()) + 1],
                    area=int(ys.size), centroid=[round(x0 + float(xs.mean()), 1), round(y0 + float(ys.mean()), 1)])
    spots.sort(key=lambda s: (s["bbox"][1], s["bbox"][0]))
    return mask

"""Drop the spots whose colour no dust could make.

Dust is a neutral occluder: an opaque or translucent particle blocks (on a negative, after
inversion: adds) light of every colour alike, so each pixel under it moves from the scene's
colour towards a grey: towards a near-black or dark grey on a positive, a near-white on a
negative. In the chroma plane (a colour minus its luma, luma being the channels' mean) such a
blend only scales the scene's chroma vector down, by the share of the scene that still shows:
never up, never sideways. The scene's own specks (a red berry among green leaves, a pinkish
knot of a nebula, the dark gaps between gold sequins) shift the hue or keep more colour than a
blend could. So a spot is measured against the clean ring around it (the scan under the
threshold, as the trim measures it) and dropped when its core's chroma departs from every such
blend of the ring's colour by more than `tolerance` levels (of 255) and by more than
defaults.NEUTRAL_SHARE of its luma contrast (contrast raises the noise of the estimate too).

Bright spots may keep at most the share of the ring's chroma that a blend towards pure white
of the same luma gain leaves; dark ones at most all of it (a black particle scales every
channel alike, exactly as a shadow does: that case is undecided and kept). A grey ring leaves
no room for chroma at all. Grayscale scans have no colour to test: every spot is kept, as are
spots whose bounding box exceeds defaults.NEUTRAL_MAX_BOX.

The ring's colour is one median and the core's one mean: a hair or scratch across two colours of
scene is measured against the majority's colour and may be dropped: on frames v11 + v12 with
0.4.3, 20 of 798 elongated true spots (2.5 %; shared.inpaint.is_elongated) against 56 of 7,886
compact ones (0.7 %). Per-pixel local ring colours would be exact; not done yet.

On the held-out frames v11 / v12 with 0.4.2's masks (session 24, models/README.md): at
tolerance 10 about 1 % of the spots on dust go, a sixth of the false ones on dusty frames and
over half of those on the clean frames (gold sequins, illustrations).
"""
import cv2
import numpy as np

from . import defaults
from .spot_pixels import ring as clean_ring
from .spot_pixels import spot_crops

_BLUR_SIGMA = 1.0          # px: JPEG keeps chroma at half resolution; blur luma and chroma alike
_CORE = 0.5                # share of the spot's strongest contrast that makes its core


def _departure(colour, own, clean, ring):
    """(chroma departure in levels, luma contrast: < 0 darker) of the spot `own` in the crop `colour`
    (float32 HxWx3, 0-255, blurred), or None where the ring is too small to measure."""
    around = clean_ring(own, clean, *ring)
    if around is None:
        return None
    ring_colour = np.median(colour[around], axis=0)
    ring_luma = float(ring_colour.mean())
    contrast = colour.mean(axis=2) - ring_luma
    inside = contrast[own]
    bright = inside.max() > -inside.min()
    if not bright:
        contrast = -contrast
    core = own & (contrast >= _CORE * float(contrast[own].max()))
    core_colour = colour[core].mean(axis=0)
    core_luma = float(core_colour.mean())
    ring_chroma, core_chroma = ring_colour - ring_luma, core_colour - core_luma
    norm2 = float(ring_chroma @ ring_chroma)
    share = float(core_chroma @ ring_chroma) / norm2 if norm2 > 1e-6 else 0.0
    # a blend towards white of this luma gain keeps at most (255 - core) / (255 - ring) of it
    most = (255.0 - core_luma) / max(255.0 - ring_luma, 1.0) if bright else 1.0
    blend = float(np.clip(share, 0.0, min(max(most, 0.0), 1.0))) * ring_chroma
    return float(np.linalg.norm(core_chroma - blend)), core_luma - ring_luma


def departures(mask, pixels, spots, thresholded=None, ring=defaults.TRIM_RING):
    """For each spot of `spots` that can be measured (a colour scan; 4+ clean ring pixels):
    (spot, (y0, y1, x0, x1), own, departure in levels, luma contrast), own marking the spot's
    pixels in mask[y0:y1, x0:x1]. `thresholded`: the ring's reference (see drop_tinted_spots)."""
    if pixels is None:
        raise ValueError("the colour test needs the scan the mask was made from")
    if pixels.ndim != 3 or pixels.shape[2] < 3:     # grayscale: no colour to test
        return
    if pixels.shape[:2] != mask.shape:
        raise ValueError(f"the colour test needs the scan the mask was made from: mask {mask.shape[::-1]} px, "
                         f"scan {pixels.shape[1::-1]}")
    if thresholded is None:
        thresholded = mask.copy()
    scale = 255.0 / 65535.0 if pixels.dtype == np.uint16 else 1.0
    margin = ring[1] + 3                            # the ring, and the blur's reach beyond it
    for spot, (y0, y1, x0, x1), own in spot_crops(mask, spots, margin, max_box=defaults.NEUTRAL_MAX_BOX):
        colour = cv2.GaussianBlur(pixels[y0:y1, x0:x1, :3].astype(np.float32) * scale, (0, 0), _BLUR_SIGMA)
        measured = _departure(colour, own, thresholded[y0:y1, x0:x1] == 0, ring)
        if measured is not None:
            yield (spot, (y0, y1, x0, x1), own, *measured)


def is_tinted(departure, contrast, tolerance=defaults.NEUTRAL):
    """The rule: more than `tolerance` levels, and more than NEUTRAL_SHARE of the contrast."""
    return departure > max(tolerance, defaults.NEUTRAL_SHARE * abs(contrast))


def drop_tinted_spots(mask, pixels, spots, tolerance=defaults.NEUTRAL, thresholded=None, ring=defaults.TRIM_RING):
    """Removes from `mask` (0/255, native size, edited in place) and from `spots` (find_spots'
    list for it) the spots whose colour departs from every neutral blend of their surroundings
    in `pixels` (the decoded scan, 8 or 16 bit); returns (spots kept, mask). tolerance 0: off.
    `thresholded`: the mask before find_spots dropped any spot (the clean ring's reference, as in
    shared/trim.py; default: `mask` as given)."""
    if tolerance <= 0:
        return spots, mask
    if thresholded is None:
        thresholded = mask.copy()
    dropped = set()
    for spot, (y0, y1, x0, x1), own, departure, contrast in departures(mask, pixels, spots, thresholded, ring):
        if is_tinted(departure, contrast, tolerance):
            mask[y0:y1, x0:x1][own] = 0             # this spot's pixels only: the next crop sees it gone
            dropped.add(id(spot))
    return [spot for spot in spots if id(spot) not in dropped], mask

"""Synthetic film dust: composite artefacts onto clean photos, return image + mask.

numpy + OpenCV only (no torch): a worker install can import this module.

How one sample is made (why: the model runs on a *working* image whose long side is
shared.defaults.WORKING_SIZE, so dust must look the way it looks after a real scan has
been downsized to that size):

1. Pretend the background is a film scan whose long side is NATIVE_LONG (3000-6000 px).
   Cut the region that becomes one out_size working tile, at that native scale.
2. Composite dust at native scale, sized like real 35 mm dust (sizes quoted for a
   ~5000 px wide scan, scaled by native_long / 5000), plus unlabelled hard negatives
   (stars, highlights, scene blobs, text) and film grain.
3. Downsize image and dust coverage with INTER_AREA to out_size; a working pixel is
   dust where at least MASK_COVERAGE of its area is covered.  0.25 (not 0.5) so that
   specks of ~1 working pixel survive as targets: sub-8 px spots are the known misses.
4. Sometimes blur, sometimes JPEG re-compress.

Dust that changes luminance by less than VISIBLE_MIN (of 255) on average, or by less than
TEXTURE_VISIBLE x the local contrast of the scene under it, is composited and labelled
don't-care: realdust-dev marks dust changing < 10 levels so, and asking the model to find
dust it cannot see teaches it to hallucinate in dark areas and to give up in busy ones.
Whole frames (`dust_scan`, for evaluation) keep realdust-dev's rule alone.
"""
import contextlib
import os
import re

import cv2
import numpy as np

# --- geometry -----------------------------------------------------------------------
WORKING_SIZE = 2016                 # long side of the working image (shared.defaults)
NATIVE_LONG = (3000, 6000)          # simulated scan long side, px
REFERENCE_LONG = 5000               # the scan width the real dust statistics refer to
SCENE_ZOOM = (0.6, 1.6)             # extra scale jitter of the scene content
FRAME_ASPECT = 1.5                  # 35 mm frame: 3:2
MASK_COVERAGE = 0.25                # area fraction that makes a working pixel "dust"
DUST, DONT_CARE = 255, 128          # truth values (realdust-dev's convention; 0 is clean)
VISIBLE_MIN = 8.0                   # mean |delta luminance| below which dust is don't care
# ... or below TEXTURE_VISIBLE x the local luma std of the scene under it (BUSY_WINDOW): dust
# hidden in foliage or gravel. Labelled positive, 45 % of the dust on a busy scene (OneStandsOut)
# was at or below its texture's contrast; the networks learned to find nothing there (0.4.0:
# 12 % of the generator's dust on that photo, 200 focused steps at lr 2e-3 moved it to 13 %).
TEXTURE_VISIBLE = 1.0
# ... unless the dust erased that texture: an opaque particle is seen by its flatness even when
# its mean is close to the scene's. realdust-dev's dim forest (scan01) holds such dust: luma std
# 3-6 inside it against 15-30 around, 10-20 levels darker, labelled dust there (its rule is the
# mean change alone); up to session 10 this rule made the same patches don't-care in training,
# and every model found next to none of them. Erased: the core's luma std after compositing is
# at most TEXTURE_ERASED x the local std of the scene, over a core of at least ERASED_MIN_PIXELS.
TEXTURE_ERASED = 0.5
ERASED_MIN_PIXELS = 8

# --- counts (per full frame; scaled by the tile's share of the frame) ----------------
SPECKS_PER_FRAME = (200, 2200)      # log-uniform; real film: 250-1,300 specks
HAIRS_PER_FRAME = (15, 300)         # hairs and fibres, log-uniform
CLUSTERS_PER_FRAME = (5, 120)       # dirt clusters
SCRATCH_PROB = 0.15                 # chance a tile has 1-3 scratches
# Widths in px of the 5000 px reference scan (36 mm: 7.2 um per px). Human hair is 17-180 um
# thick, typically 50-100 um (7-14 px); lint fibres are finer. Hairs drawn 1-5 px wide left the
# 0.2.0 model blind to thick hairs and wide scratches (realdust-dev: 9 % of dust pixels found
# on objects of 32 px and more, against 76-79 % on specks).
FIBRE_WIDTH = (0.8, 3.0)
HAIR_WIDTH = (1.0, 16.0)            # log-uniform
SCRATCH_WIDTH = (0.6, 12.0)         # log-uniform
SPRITES_PER_TILE = 0.8              # Poisson mean, when a sprite folder is given
EMPTY_PROB = 0.08                   # tiles with no dust at all

# --- sizes (native px at REFERENCE_LONG) ---------------------------------------------
SPECK_MEDIAN = 10.0                 # real film: median extent 9-11 px
SPECK_SIGMA = 0.85                  # lognormal: 90th percentile ~30 px
SPECK_RANGE = (1.5, 140.0)
SIZE_JITTER = (0.8, 1.4)            # per-sample multiplier of the size scale

# --- appearance -----------------------------------------------------------------------
DARK_PROB = 0.65                    # dark dust (positives) vs bright dust (negatives)
# Share of dust drawn as a flat lerp towards its tone (an opaque particle's silhouette: the scene's
# texture disappears under it, and on a dim scene dark dust can even be a little brighter than
# the shadows it covers); the rest only darkens (dark dust) / brightens (bright dust) per channel.
# Measured on realdust-dev's dim forest: luma std 3 inside dust against 19 around it.
FLAT_DUST_PROB = 0.7
DARK_SCENE_PROB = 0.3               # tiles darkened with a gamma curve before dusting
DARK_SCENE_GAMMA = (1.4, 2.8)
# Share of dimmed tiles sharpened afterwards: the gamma curve flattens the texture of the shadows,
# yet a sunlit-and-shaded forest floor is dim *and* busy (mean luma ~40, high-pass ~9 at the
# working scale) and the network that only saw dim *flat* scenes found no dust there.
DIM_SHARPEN_PROB = 0.6
FAINT_PROB = 0.35                   # share of low-opacity dust (faint dust: the 0.1.0 model's main miss)
# Share of dark dust whose tone follows the scene under it (local mean colour x SHADE_FACTOR)
# instead of near-black: on realdust-dev's dim forest the dust is a flat patch only 8-15 levels
# darker than the foliage around it (BGR (20,34,24) inside vs (20,43,26) outside); near-black
# tones never produce that, and 0.2.0 found none of it.
SHADOW_DUST_PROB = 0.3
SHADE_FACTOR = (0.45, 0.9)
# Share of dark dust drawn neutral: an opaque particle blocks light of every colour, so the pixel
# goes towards a grey, and scene-following dust towards the grey of the scene's luma x the factor
# rather than its colour x the factor.  Otherwise near-black tones get an additive N(0, 5) per
# channel (at a tone of 10 that is a strong tint) and scene-following dust keeps the scene's
# colour, exactly as a shadow does.  On realdust-dev's dim forest the dust keeps less colour than
# its surroundings and the forest's own dark spots keep more: that is the one local cue that tells
# them apart (`python -m trainer.cue_probe`: AUC 0.90, darkness 0.58, flatness 0.54; session 19).
NEUTRAL_DUST_PROB = 0.0
NEUTRAL_TINT = 0.04                 # relative per-channel jitter of a neutral tone ("slightly warm")
# Share of that scene-following dust drawn per pixel (scene x factor: a translucent particle that
# transmits 45-90 % of the light, the texture still faintly visible through it) instead of flat.
TRANSMIT_PROB = 0.5
# Share of dust placed where it is hardest to tell from the scene: the busiest of BUSY_CANDIDATES
# random spots (local luma std x how much the dust would stand out there). Uniform placement
# rarely puts a dark speck in a bright gap of a canopy, and 0.2.0 learned to call every dark spot
# among branches scene content (black 5 px dots on bright sky between branches: p < 0.1, on a
# flat grey: 0.99; realdust-dev's forest).
BUSY_PLACE_PROB = 0.35
BUSY_CANDIDATES = 8
# Share of those busy placements scored by texture alone, so dark dust also lands in busy
# *shadows* (texture x luma sends it to bright gaps only).
BUSY_ANY_LUMA_PROB = 0.5
BUSY_WINDOW = 15                    # px at the 5000 px reference
GRAIN_SIGMA = (1.0, 7.0)            # film grain std, of 255
# Busy, high-frequency scenes under the dust (crisp foliage, coarse grain of fast film): at the
# working scale realdust-dev's forest floor has a mean |high-pass| (luma minus its 2-px blur) of
# ~10 of 255 against ~2.5 in the median training tile, and 0.4.0 found no dust there, not even
# dust pasted on it (a noise of std 8 under dust cut it from 90% found to 17%).
SHARPEN_PROB = 0.3                  # unsharp mask of the scene before dusting
SHARPEN_AMOUNT = (0.5, 3.0)
SHARPEN_SIGMA = (0.7, 2.5)          # working px
SCENE_NOISE_PROB = 0.2              # coarse grain under the dust
SCENE_NOISE_SIGMA = (4.0, 16.0)     # std at the working scale, of 255
BLUR_PROB = 0.25
JPEG_PROB = 0.3
JPEG_QUALITY = (55, 95)

# --- hard negatives (never labelled) -------------------------------------------------
STARFIELD_PROB = 0.25               # tiles full of stars (the classic false positive)
HIGHLIGHT_PROB = 0.35
SCENE_BLOB_PROB = 0.45
# Scene blobs' tone, x the scene's mean colour under them (session 14; before, the pixel at the
# blob's centre: see _add_hard_negatives). Darker blobs (0.7-0.9, as up to session 4)
# were the scene-following dust of SHADE_FACTOR left unlabelled: one patch taught both ways, and
# the network learned to ignore dust 10-30 % darker than a dim scene. Seeds and pebbles that dark
# remain (by hue noise), but most scene blobs are now lighter or barely darker than the scene.
SCENE_BLOB_TONE = (0.9, 1.5)
# Their colour jitter, relative to the scene (std per channel): an additive N(0, 15) (up to
# session 5) made 14.5 % of the blobs on a luma-40 scene darker than 0.85x it, desaturated and
# unlabelled (scan01's dust), against 1.9 % on a bright scene. Relative, it is alike everywhere.
SCENE_BLOB_HUE = 0.12
TEXT_PROB = 0.1
TEXTURE_PROB = 0.15
# Share of tiles given "shadow twins": unlabelled dark specks shaped and placed like dark dust
# (busy places, SHADE_FACTOR of the scene, flat or translucent) that keep the scene's colour, as
# a shadow or a dark seed does.  Only where the scene under them has colour (chroma per luma at
# least TWIN_MIN_CHROMA), so that with NEUTRAL_DUST_PROB=1 the one thing that tells a twin from
# dust is that dust goes grey: the cue scan01's dust differs by (session 19, AUC 0.90), and what
# 0.4.1's false spots on scan02 lack (dark red specks of the leaves' hue, session 22).  0 by
# default, and then not drawn, so the default generator's random stream stays as it was.
SHADOW_TWIN_PROB = 0.0
TWINS_PER_TILE = (5, 40)
TWIN_MIN_CHROMA = 0.2
# The same for bright dust (negatives): "glow twins", specks GLOW_FACTOR brighter than the scene
# and of its hue (a lit seed, a nebula's knot), where bright dust goes towards a near-white.
# realdust-dev's clean Milky Way draws 0.4.1's false spots on such knots (pinkish, ~16 levels
# brighter than the sky around them, session 22).
GLOW_TWIN_PROB = 0.0
GLOW_FACTOR = (1.25, 2.0)

_SIZE_SUFFIX = re.compile(r"[_\- ]?\d+[xX]\d+$")   # Name_3840x2160: one size of Name
PREVIEW_PREFIX = "screenshot"                     # KDE packages' thumbnails of their photo
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# The evaluation set's photos (realdust-dev and its held-out twin) come from these
# wallpapers: training on them would make the figures lie.
EXCLUDED_NAMES = ("Path", "Autumn", "ColorfulCups", "MilkyWay")
SPRITE_KINDS = ("dirt", "dots", "hair", "hair-short", "lint", "scratches", "smut", "spots",
                "sprinkles", "stain")
# Sprite scale ranges (x size scale): blobby kinds are drawn much larger than real specks.
SPRITE_SCALE = {"dots": (0.05, 0.25), "smut": (0.05, 0.25), "stain": (0.04, 0.2),
                "hair": (0.4, 1.3), "hair-short": (0.4, 1.3), "lint": (0.3, 1.0),
                "scratches": (0.6, 1.4), "spots": (0.6, 1.4), "dirt": (0.5, 1.3),
                "sprinkles": (0.3, 0.9)}
SPRITE_WEIGHTS = {"dirt": 1.0, "dots": 0.8, "hair": 1.5, "hair-short": 1.5, "lint": 1.0,
                  "scratches": 0.6, "smut": 0.8, "spots": 1.5, "sprinkles": 0.5, "stain": 0.3}


# ====================================================================================
# inputs
# ====================================================================================
def _excluded(path: str) -> bool:
    parts = os.path.normpath(path).split(os.sep)
    return any(name in part for part in parts for name in EXCLUDED_NAMES)


def scene_name(path: str) -> str:
    """The photo a file shows, whatever size it ships in: a KDE wallpaper package's folder
    name (<Name>/contents/images[_dark]/1920x1080.jpg), else the file name less a WxH suffix
    (mate's Elephants_3840x2160.jpg), or its folder's name when the name is only a size.
    Location-free, so a copied tree splits the same."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    if len(parts) >= 4 and parts[-3] == "contents" and parts[-2].startswith("images"):
        return parts[-4]
    stem = os.path.splitext(parts[-1])[0]
    return _SIZE_SUFFIX.sub("", stem) or parts[-2]


def _preference(path: str):
    """Larger file first; of equal ones (KDE links small sizes to the large file) the real one."""
    return os.path.getsize(path), not os.path.islink(path)


def load_backgrounds(paths) -> list:
    """One file per photo under the given files/folders (recursive; the largest of the sizes a
    photo ships in, package previews skipped), sorted, evaluation photos removed.

    KDE packages ship each photo in up to 13 sizes: counted per file, 11 scenes made 67 % of
    all tiles (up to dustspot-unet 0.4.0), and a scene's sizes fell on both sides of the split."""
    found = []
    for p in paths:
        if os.path.isdir(p):
            for dirpath, _, files in os.walk(p):
                found += [os.path.join(dirpath, f) for f in files]
        elif os.path.isfile(p):
            found.append(p)
    largest = {}
    for f in sorted(set(found)):
        name = os.path.basename(f).lower()
        if (not name.endswith(IMAGE_EXTENSIONS) or name.startswith(PREVIEW_PREFIX) or _excluded(f)
                or not os.path.isfile(f)):                # a dangling link is no photo
            continue
        key = (os.path.dirname(f), scene_name(f))      # images/ and images_dark/ are two variants
        if key not in largest or _preference(f) > _preference(largest[key]):
            largest[key] = f
    return sorted(largest.values())


def read_background(path: str, max_long: int = 6144):
    """Decode a background as 8-bit BGR (gray and 16-bit inputs converted); None if unreadable."""
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        return None
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if min(img.shape[:2]) < 64:
        return None
    scale = max_long / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return img


def high_pass(img) -> float:
    """Mean |luma - its 2 px blur| (of 255): how busy an image is at its own scale."""
    luma = _luma(np.asarray(img, np.float32))
    return float(np.abs(luma - cv2.GaussianBlur(luma, (0, 0), 2)).mean())


def to_working(img):
    """A whole photo scaled so its long side is WORKING_SIZE (what the network sees of a scan)."""
    scale = WORKING_SIZE / max(img.shape[:2])
    return cv2.resize(img, None, fx=scale, fy=scale,
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def scene_texture(img) -> float:
    """How busy a scene is: high_pass at the working scale. Smooth landscapes 1-2, foliage
    and gravel 8-16 (realdust-dev's forest floor: 8)."""
    return high_pass(to_working(img))


class SpriteBank:
    """Alpha masks of the film-damage sprites, loaded on first use and kept cropped."""

    def __init__(self, folder: str):
        self.folder = folder
        self.files = {}
        for kind in SPRITE_KINDS:
            sub = os.path.join(folder, kind)
            if os.path.isdir(sub):
                names = sorted(f for f in os.listdir(sub) if f.lower().endswith(".png"))
                if names:
                    self.files[kind] = [os.path.join(sub, f) for f in names]
        if not self.files:
            raise ValueError(f"{folder}: no sprite kind folders ({', '.join(SPRITE_KINDS)})")
        self.kinds = sorted(self.files)
        w = np.array([SPRITE_WEIGHTS.get(k, 1.0) for k in self.kinds])
        self.weights = w / w.sum()
        self._cache = {}

    def __len__(self):
        return sum(len(v) for v in self.files.values())

    def alpha(self, path: str):
        if path not in self._cache:
            img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
            if img is not None and img.ndim == 3 and img.shape[2] == 4:
                img = img[..., 3]
            elif img is not None and img.ndim == 2:
                pass            # alpha alone (trainer.shrink_inputs' copies)
            else:
                img = None
            if img is None or img.dtype != np.uint8:
                a = np.zeros((1, 1), np.float32)
            else:
                a = img.astype(np.float32) / 255.0
                ys, xs = np.nonzero(a > 0.02)
                if len(ys):
                    a = a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
            self._cache[path] = np.ascontiguousarray(a)
        return self._cache[path]

    def pick(self, rng):
        kind = self.kinds[rng.choice(len(self.kinds), p=self.weights)]
        files = self.files[kind]
        return kind, self.alpha(files[rng.integers(len(files))])


# ====================================================================================
# shapes: each returns a float32 alpha patch in [0, 1] at native pixels
# ====================================================================================
def _soften(a, sigma):
    if sigma > 0.15:
        k = int(2 * round(3 * sigma) + 1)
        a = cv2.GaussianBlur(a, (k, k), sigma)
    return a


def shape_speck(rng, extent):
    """Round-ish or irregular speck of the given extent (px), soft edge."""
    pad = 3
    size = int(np.ceil(extent)) + 2 * pad
    up = 4                                   # supersample: sub-pixel specks stay round
    canvas = np.zeros((size * up, size * up), np.uint8)
    c = size * up / 2
    if rng.random() < 0.45 or extent < 4:    # ellipse
        ax = extent * up / 2 * rng.uniform(0.55, 1.0)
        ay = ax * rng.uniform(0.5, 1.0)
        cv2.ellipse(canvas, (int(c), int(c)), (max(1, int(ax)), max(1, int(ay))),
                    rng.uniform(0, 180), 0, 360, 255, -1, cv2.LINE_AA)
    else:                                    # irregular: a few overlapping lobes / polygon
        n = rng.integers(5, 12)
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = extent * up / 2 * rng.uniform(0.35, 1.0, n)
        pts = np.stack([c + rad * np.cos(ang), c + rad * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 255, cv2.LINE_AA)
        for _ in range(rng.integers(0, 3)):
            r = extent * up * rng.uniform(0.1, 0.3)
            o = rng.uniform(-0.3, 0.3, 2) * extent * up
            cv2.circle(canvas, (int(c + o[0]), int(c + o[1])), max(1, int(r)), 255, -1, cv2.LINE_AA)
    a = cv2.resize(canvas, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return _soften(a, rng.uniform(0.0, 0.5) * (1 + extent / 30))


def shape_cluster(rng, extent):
    """Dirt cluster: many tiny specks scattered around a centre."""
    span = extent * rng.uniform(2, 5)
    size = int(span) + 8
    a = np.zeros((size, size), np.float32)
    for _ in range(rng.integers(4, 25)):
        e = max(1.2, extent * rng.uniform(0.15, 0.6))
        s = shape_speck(rng, e)
        y, x = (rng.normal(0.5, 0.18, 2) * (size - s.shape[0])).clip(0, size - s.shape[0]).astype(int)
        sub = a[y:y + s.shape[0], x:x + s.shape[1]]
        np.maximum(sub, s[:sub.shape[0], :sub.shape[1]], out=sub)
    return a


def _curve_points(rng, length, curl):
    """A random smooth curve of roughly `length` px: a cubic Bezier plus a random walk."""
    p0 = np.zeros(2)
    d = rng.uniform(0, 2 * np.pi)
    p3 = p0 + length * np.array([np.cos(d), np.sin(d)]) * rng.uniform(0.6, 1.0)
    p1 = p0 + (p3 - p0) / 3 + rng.normal(0, curl * length, 2)
    p2 = p0 + 2 * (p3 - p0) / 3 + rng.normal(0, curl * length, 2)
    n = max(8, int(length / 2))
    t = np.linspace(0, 1, n)[:, None]
    pts = ((1 - t) ** 3) * p0 + 3 * ((1 - t) ** 2) * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3
    pts += np.cumsum(rng.normal(0, 0.15, (n, 2)), 0)
    return pts


def shape_line(rng, length, width, curl, taper=True):
    """Hair / fibre / scratch: an anti-aliased polyline with sub-pixel width."""
    pts = _curve_points(rng, length, curl)
    pad = int(width) + 4
    pts = pts - pts.min(0) + pad
    h, w = (pts.max(0) + pad).astype(int)[::-1]
    up = 2
    canvas = np.zeros((h * up, w * up), np.uint8)
    thick = max(1, int(round(width * up)))
    ipts = (pts * up * 16).astype(np.int32)       # shift=4: 1/16 px precision
    if taper and len(ipts) > 6:
        k = len(ipts) // 3
        cv2.polylines(canvas, [ipts[k:2 * k + 1]], False, 255, thick, cv2.LINE_AA, 4)
        t2 = max(1, thick - 1) if thick > 1 else 1
        cv2.polylines(canvas, [ipts[:k + 1]], False, 255, t2, cv2.LINE_AA, 4)
        cv2.polylines(canvas, [ipts[2 * k:]], False, 255, t2, cv2.LINE_AA, 4)
    else:
        cv2.polylines(canvas, [ipts], False, 255, thick, cv2.LINE_AA, 4)
    a = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    if width * up < 1:
        a *= width * up                           # thinner than a pixel: fainter, not thicker
    return a


def shape_sprite(rng, sprites, scale):
    kind, a = sprites.pick(rng)
    lo, hi = SPRITE_SCALE.get(kind, (0.4, 1.2))
    f = rng.uniform(lo, hi) * scale
    h, w = a.shape
    nh, nw = max(1, int(round(h * f))), max(1, int(round(w * f)))
    a = cv2.resize(a, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    k = rng.integers(4)
    a = np.rot90(a, k)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    return np.ascontiguousarray(a, dtype=np.float32)


# ====================================================================================
# compositing
# ====================================================================================
def _luma(img):
    return img[..., 0] * 0.114 + img[..., 1] * 0.587 + img[..., 2] * 0.299


class _Canvas:
    """The native-scale image being dirtied, and the coverage of visible (labelled) dust."""

    def __init__(self, img, scale, texture_visible=TEXTURE_VISIBLE):
        self.img = img                                    # float32 BGR 0..255
        self.scale = scale                                # dust size scale (native px / 5000 px)
        self.texture_visible = texture_visible            # 0: realdust-dev's rule, VISIBLE_MIN only
        self.h, self.w = img.shape[:2]
        self.cover = np.zeros((self.h, self.w), np.float32)
        self.faint = np.zeros((self.h, self.w), np.float32)   # dust too faint to see: don't care
        self._busy = None

    def busy(self):
        """Local luma std and luma of the scene (computed once, before dust lands on it)."""
        if self._busy is None:
            luma = _luma(self.img)
            k = max(3, int(BUSY_WINDOW * self.scale) | 1)
            mean = cv2.blur(luma, (k, k))
            std = np.sqrt(np.maximum(cv2.blur(luma * luma, (k, k)) - mean * mean, 0))
            self._busy = std, luma
        return self._busy

    def place(self, alpha, y, x):
        """Clip a patch placed with top-left (y, x) to the canvas; return slices or None."""
        ph, pw = alpha.shape
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(self.h, y + ph), min(self.w, x + pw)
        if y1 <= y0 or x1 <= x0:
            return None
        return (slice(y0, y1), slice(x0, x1)), alpha[y0 - y:y1 - y, x0 - x:x1 - x]

    def dust(self, alpha, y, x, tone, opacity, label=True, polarity=0, shade=None, transmit=False,
             grey=False):
        """Lerp towards `tone` (BGR) by alpha*opacity; label it when the change is visible.

        polarity -1: dust only darkens (it blocks light: black dust on a black sky is
        invisible, not grey); +1: only brightens; 0: plain lerp (scene content).
        shade: when given (a factor, or one per channel), the tone is the mean colour under the
        dust times `shade`, or with `transmit` each pixel's own colour times `shade` (translucent
        dust); at most 255.  grey: with shade, that colour's luma in every channel (neutral dust)."""
        placed = self.place(alpha, y, x)
        if placed is None:
            return
        sl, a = placed
        texture = self.busy()[0][sl] if label and self.texture_visible else None
        roi = self.img[sl]
        before = _luma(roi)
        aa = (a * opacity)[..., None]
        if shade is not None and transmit:
            tone = np.minimum((_luma(roi)[..., None] if grey else roi) * shade, 255)
        elif shade is not None:
            weight = a[..., None] + 1e-6
            mean = (roi * weight).sum(axis=(0, 1)) / weight.sum(axis=(0, 1))
            tone = np.minimum((_luma(mean) if grey else mean) * shade, 255)
        target = np.asarray(tone, np.float32)
        if polarity < 0:
            target = np.minimum(target, roi)
        elif polarity > 0:
            target = np.maximum(target, roi)
        roi += (target - roi) * aa
        if not label:
            return
        core = a >= 0.5
        if not core.any():
            return
        after = _luma(roi)[core]
        change = np.abs(after - before[core]).mean()
        hidden_below = 0.0
        if texture is not None:
            local = float(texture[core].mean())
            erased = after.size >= ERASED_MIN_PIXELS and float(after.std()) <= TEXTURE_ERASED * local
            hidden_below = 0.0 if erased else self.texture_visible * local
        visible = change >= max(VISIBLE_MIN, hidden_below)
        target_map = self.cover if visible else self.faint
        np.maximum(target_map[sl], core.astype(np.float32), out=target_map[sl])


def _dust_tone(rng, dark, neutral=False):
    if dark:      # dust blocks light: near-black, slightly warm or neutral
        v = rng.uniform(0, 45)
        if neutral:
            return np.clip(v * (1 + rng.normal(0, NEUTRAL_TINT, 3)), 0, 255)
        return np.clip(v + rng.normal(0, 5, 3), 0, 255)
    v = rng.uniform(215, 255)
    return np.clip(v + rng.normal(0, 5, 3), 0, 255)


def _polarity(rng, dark):
    """0: flat lerp (most dust); -1 / +1: only darken / only brighten (see FLAT_DUST_PROB)."""
    if rng.random() < _share("FLAT_DUST_PROB", dark):
        return 0
    return -1 if dark else 1


def _shade(rng, dark):
    """None (a fixed tone) or the factor of a scene-following dark tone (SHADOW_DUST_PROB)."""
    if dark and rng.random() < SHADOW_DUST_PROB:
        return rng.uniform(*SHADE_FACTOR)
    return None


def _put(rng, cv, alpha, dark, scale):
    """Composite one labelled artefact of polarity family `dark` at a random place."""
    shade = _shade(rng, dark)
    polarity = 0 if shade is not None else _polarity(rng, dark)
    pos = _busy_pos(rng, cv, alpha, dark) if rng.random() < _share("BUSY_PLACE_PROB", dark) else _random_pos(rng, cv, alpha)
    # drawn only when the share is set, so the default generator's random stream stays as it was
    neutral = dark and NEUTRAL_DUST_PROB > 0 and rng.random() < NEUTRAL_DUST_PROB
    cv.dust(alpha, *pos, _dust_tone(rng, dark, neutral), _opacity(rng, dark), polarity=polarity, shade=shade,
            transmit=shade is not None and rng.random() < TRANSMIT_PROB, grey=neutral)


def _busy_pos(rng, cv, patch, dark):
    """The busiest of BUSY_CANDIDATES random positions: textured, and bright under dark dust
    (dark under bright dust), i.e. where the dust contrasts with the pixel yet hides in texture;
    by texture alone in BUSY_ANY_LUMA_PROB of the calls (busy shadows too)."""
    std, luma = cv.busy()
    any_luma = rng.random() < _share("BUSY_ANY_LUMA_PROB", dark)
    ph, pw = patch.shape
    best, best_score = None, -np.inf
    for _ in range(BUSY_CANDIDATES):
        y, x = _random_pos(rng, cv, patch)
        yc, xc = min(max(y + ph // 2, 0), cv.h - 1), min(max(x + pw // 2, 0), cv.w - 1)
        score = std[yc, xc] * (1.0 if any_luma else luma[yc, xc] if dark else 255.0 - luma[yc, xc])
        if score > best_score:
            best, best_score = (y, x), score
    return best


def _opacity(rng, dark):
    if rng.random() < _share("FAINT_PROB", dark):
        return rng.uniform(0.1, 0.55)
    return rng.uniform(0.6, 1.0)


def _log_uniform(rng, lo, hi):
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _random_pos(rng, canvas, patch):
    ph, pw = patch.shape
    return int(rng.integers(-ph // 2, canvas.h - ph // 2 + 1)), int(rng.integers(-pw // 2, canvas.w - pw // 2 + 1))


def _add_dust(rng, cv, sprites, scale, frac, dark):
    """All labelled artefacts of one tile."""
    specks = rng.poisson(_log_uniform(rng, *SPECKS_PER_FRAME) * frac)
    hairs = rng.poisson(_log_uniform(rng, *HAIRS_PER_FRAME) * frac)
    clusters = rng.poisson(_log_uniform(rng, *CLUSTERS_PER_FRAME) * frac)
    scratches = rng.integers(1, 4) if rng.random() < SCRATCH_PROB else 0
    n_sprites = rng.poisson(SPRITES_PER_TILE) if sprites is not None else 0
    # one sample-wide tone family keeps a "film" consistent; a few opposite-polarity items
    # (scratches through the base, bright lint) keep the model from relying on it entirely
    for _ in range(specks):
        e = np.clip(rng.lognormal(np.log(SPECK_MEDIAN), SPECK_SIGMA), *SPECK_RANGE) * scale
        _put(rng, cv, shape_speck(rng, max(1.0, e)), dark, scale)
    for _ in range(clusters):
        e = np.clip(rng.lognormal(np.log(SPECK_MEDIAN * 0.6), 0.5), 2, 40) * scale
        _put(rng, cv, shape_cluster(rng, max(1.5, e)), dark, scale)
    for _ in range(hairs):
        if rng.random() < 0.55:      # short fibre
            length, width, curl = rng.uniform(15, 150), rng.uniform(*FIBRE_WIDTH), 0.25
        else:                        # hair, up to very long
            length, width, curl = _log_uniform(rng, 80, 1500), _log_uniform(rng, *HAIR_WIDTH), 0.3
        _put(rng, cv, shape_line(rng, length * scale, max(0.4, width * scale), curl), dark, scale)
    for _ in range(scratches):
        length = max(cv.h, cv.w) * rng.uniform(0.5, 1.5)
        a = shape_line(rng, length, max(0.5, _log_uniform(rng, *SCRATCH_WIDTH) * scale), 0.03, taper=False)
        _put(rng, cv, a, dark if rng.random() < 0.7 else not dark, scale)
    for _ in range(n_sprites):
        _put(rng, cv, shape_sprite(rng, sprites, scale), dark, scale)


def _gauss_spot(sigma_y, sigma_x, angle):
    r = int(np.ceil(3 * max(sigma_x, sigma_y))) + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * xx + s * yy, -s * xx + c * yy
    return np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2)).astype(np.float32)


def _add_hard_negatives(rng, cv, scale, dark):
    """Scene content that looks dust-like but is not: composited, never labelled."""
    luma = _luma(cv.img)
    if rng.random() < STARFIELD_PROB * (1.0 if dark else 0.5):
        # stars: gaussian points, brightest on dark sky; sizes ~ a few native px
        n = int(_log_uniform(rng, 10, 400) * (cv.h * cv.w) / 500_000)
        for _ in range(n):
            s = rng.uniform(0.5, 2.2) * scale
            a = _gauss_spot(s, s * rng.uniform(0.8, 1.2), 0)
            y, x = _random_pos(rng, cv, a)
            tint = np.clip(rng.uniform(180, 255) + rng.normal(0, 20, 3), 0, 255)
            cv.dust(a, y, x, tint, rng.uniform(0.3, 1.0), label=False)
        if rng.random() < 0.5:      # faint nebula / sky glow
            glow = cv2.GaussianBlur(rng.random((cv.h // 16 + 1, cv.w // 16 + 1)).astype(np.float32), (0, 0), 2)
            glow = cv2.resize(glow, (cv.w, cv.h))
            cv.img += (glow[..., None] * rng.uniform(0, 25)) * (luma[..., None] < 90)
    if rng.random() < HIGHLIGHT_PROB:
        # specular glints: small bright soft blobs, often elongated, on any tone
        for _ in range(rng.integers(1, 25)):
            s = rng.uniform(0.8, 5) * scale
            a = _gauss_spot(s, s * rng.uniform(1, 3), rng.uniform(0, np.pi))
            a = np.clip(a * rng.uniform(1, 2.5), 0, 1)
            cv.dust(a, *_random_pos(rng, cv, a), np.full(3, rng.uniform(220, 255)),
                    rng.uniform(0.4, 1.0), label=False)
    if rng.random() < SCENE_BLOB_PROB:
        # seeds, pebbles, leaves' spots: coloured like the scene, softer, low contrast
        for _ in range(rng.integers(3, 60)):
            e = np.clip(rng.lognormal(np.log(8), 0.6), 2, 40) * scale
            a = _soften(shape_speck(rng, e), rng.uniform(0.6, 2.0) * scale)
            # the tone follows the scene's mean colour under the blob, not the pixel at its
            # centre: on a busy scene that pixel is as often a dark leaf as a bright gap, and on
            # crops of realdust-dev's forest 34 % of centre-pixel blobs came out below 0.9x the
            # mean around them (12 % below 0.6x; now 22 % and 3 %): flat, dark, unlabelled
            # patches, i.e. scan01's dust (flat, 0.39-0.88x its surroundings) taught as scene
            # content on exactly the busy scenes (models/README.md, session 14)
            shade = rng.uniform(*SCENE_BLOB_TONE) * (1 + rng.normal(0, SCENE_BLOB_HUE, 3))
            cv.dust(a, *_random_pos(rng, cv, a), None, rng.uniform(0.3, 0.8), label=False, shade=shade)
    if rng.random() < TEXTURE_PROB:
        # fine texture (gravel, foliage, fabric): band-passed noise modulating a region
        n = rng.standard_normal((cv.h, cv.w)).astype(np.float32)
        s = rng.uniform(0.6, 1.8) * scale
        tex = cv2.GaussianBlur(n, (0, 0), s) - cv2.GaussianBlur(n, (0, 0), s * 3)
        region = cv2.GaussianBlur((rng.random((8, 8)) > 0.5).astype(np.float32), (0, 0), 1.5)
        region = cv2.resize(region, (cv.w, cv.h))
        cv.img += (tex * region * rng.uniform(20, 60) / (tex.std() + 1e-6) / 3)[..., None]
    if rng.random() < TEXT_PROB:
        for _ in range(rng.integers(1, 4)):
            words = "".join(rng.choice(list("ABCDEFGHKLMNOPRSTUVXYZ0123456789 .:-"), rng.integers(3, 14)))
            font = int(rng.choice([0, 1, 2, 3, 4, 6, 7]))
            fs = rng.uniform(0.3, 1.6) * scale * 2
            color = rng.uniform(0, 60, 3) if rng.random() < 0.5 else rng.uniform(190, 255, 3)
            org = (int(rng.integers(0, cv.w)), int(rng.integers(0, cv.h)))
            layer = np.zeros((cv.h, cv.w), np.uint8)          # putText wants 8-bit images
            cv2.putText(layer, words, org, font, fs, 255, max(1, int(fs * 1.5)), cv2.LINE_AA)
            cv.dust(layer.astype(np.float32) / 255, 0, 0, color, rng.uniform(0.5, 1.0), label=False)
    if SHADOW_TWIN_PROB > 0 and rng.random() < SHADOW_TWIN_PROB:
        _add_twins(rng, cv, scale, True)
    if GLOW_TWIN_PROB > 0 and rng.random() < GLOW_TWIN_PROB:
        _add_twins(rng, cv, scale, False)


def chroma_per_luma(bgr):
    """(max - min channel) / luma of one colour: 0 for a grey."""
    return float((bgr.max() - bgr.min()) / max(float(_luma(bgr)), 1.0))


def _add_twins(rng, cv, scale, dark):
    """Dark (bright) specks that keep the scene's colour, never labelled: SHADOW_TWIN_PROB
    (GLOW_TWIN_PROB)."""
    np.clip(cv.img, 0, 255, out=cv.img)      # busy() is cached from here on: luma of 0-255, as for the dust
    for _ in range(int(rng.integers(*TWINS_PER_TILE))):
        e = np.clip(rng.lognormal(np.log(SPECK_MEDIAN), SPECK_SIGMA), *SPECK_RANGE) * scale
        a = shape_speck(rng, max(1.0, e))
        y, x = _busy_pos(rng, cv, a, dark)
        placed = cv.place(a, y, x)
        if placed is None:
            continue
        sl, aa = placed
        weight = aa[..., None] + 1e-6
        under = (cv.img[sl] * weight).sum(axis=(0, 1)) / weight.sum(axis=(0, 1))
        if chroma_per_luma(under) < TWIN_MIN_CHROMA:
            continue
        cv.dust(a, y, x, None, rng.uniform(0.6, 1.0), label=False,
                shade=rng.uniform(*(SHADE_FACTOR if dark else GLOW_FACTOR)), transmit=rng.random() < TRANSMIT_PROB)


def _grain(rng, img, scale):
    """Film grain: luminance-weighted, slightly clumped noise, mostly monochrome."""
    sigma = rng.uniform(*GRAIN_SIGMA)
    h, w = img.shape[:2]
    mono = rng.standard_normal((h, w)).astype(np.float32)
    colour = rng.standard_normal((h, w, 3)).astype(np.float32) * rng.uniform(0, 0.5)
    n = mono[..., None] + colour
    clump = rng.uniform(0.3, 1.2) * scale
    n = cv2.GaussianBlur(n, (0, 0), clump) * (1 + clump)   # keep the std roughly constant
    mid = 1.0 - 0.6 * np.abs(_luma(img) / 127.5 - 1)[..., None]  # most visible in mid-tones
    img += n * sigma * mid


def _texture(rng, img, px_per_working, sharpen_prob=SHARPEN_PROB):
    """Crisper and grainier scenes (SHARPEN_*, SCENE_NOISE_*), in place, before any dust lands."""
    if rng.random() < sharpen_prob:
        sigma = rng.uniform(*SHARPEN_SIGMA) * px_per_working
        img += rng.uniform(*SHARPEN_AMOUNT) * (img - cv2.GaussianBlur(img, (0, 0), sigma))
    if rng.random() < SCENE_NOISE_PROB:
        h, w = img.shape[:2]
        n = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.5 * px_per_working)
        n *= rng.uniform(*SCENE_NOISE_SIGMA) / max(float(n.std()), 1e-6)
        img += n[..., None] * (1.0 - 0.6 * np.abs(_luma(img) / 127.5 - 1))[..., None]
    np.clip(img, 0, 255, out=img)


def _crop(rng, bg, out_size, native_long):
    """The background region that becomes one working tile, resized to native pixels."""
    h, w = bg.shape[:2]
    long_side = max(h, w) * rng.uniform(*SCENE_ZOOM)
    side_bg = int(round(out_size * long_side / WORKING_SIZE))
    side_bg = int(np.clip(side_bg, 16, min(h, w)))
    y = int(rng.integers(0, h - side_bg + 1))
    x = int(rng.integers(0, w - side_bg + 1))
    patch = bg[y:y + side_bg, x:x + side_bg]
    side_native = int(round(out_size * native_long / WORKING_SIZE))
    interp = cv2.INTER_AREA if side_native < side_bg else cv2.INTER_CUBIC
    patch = cv2.resize(patch, (side_native, side_native), interpolation=interp)
    k = rng.integers(4)
    patch = np.rot90(patch, k)
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    return np.ascontiguousarray(patch).astype(np.float32)


def _truth(cover, faint, coverage):
    """Truth mask: DUST where visible dust covers >= `coverage`, else DONT_CARE where faint dust
    does (as in realdust-dev: labelled 0 it taught the model to ignore subtle patches), else 0."""
    truth = np.where(faint >= coverage, DONT_CARE, 0).astype(np.uint8)
    truth[cover >= coverage] = DUST
    return truth


def make_sample(background_bgr_uint8, rng: np.random.Generator, sprites=None, out_size: int = 256):
    """One synthetic training tile: (image BGR uint8 [S,S,3], mask uint8 [S,S]: 255 dust,
    128 dust too faint to see or hidden in texture (don't care), 0 clean)."""
    native_long = rng.uniform(*NATIVE_LONG)
    scale = native_long / REFERENCE_LONG * rng.uniform(*SIZE_JITTER)
    img = _crop(rng, background_bgr_uint8, out_size, native_long)
    # exposure / contrast jitter: film scans range from flat to punchy
    img = (img - 128) * rng.uniform(0.7, 1.25) + 128 + rng.normal(0, 12)
    img = np.clip(img, 0, 255)
    dim = rng.random() < DARK_SCENE_PROB
    if dim:
        # dim scenes (forest, night, shadow): dust there changes luminance by a few levels
        # and mostly shows as a grey, desaturated patch; the 0.1.0 model missed all of it
        img = 255.0 * (img / 255.0) ** rng.uniform(*DARK_SCENE_GAMMA)
    _texture(rng, img, native_long / WORKING_SIZE, DIM_SHARPEN_PROB if dim else SHARPEN_PROB)
    cv = _Canvas(img, scale)
    dark = rng.random() < DARK_PROB
    _add_hard_negatives(rng, cv, scale, dark)
    np.clip(cv.img, 0, 255, out=cv.img)
    if rng.random() >= EMPTY_PROB:
        frac = out_size * out_size / (WORKING_SIZE * WORKING_SIZE / FRAME_ASPECT)
        _add_dust(rng, cv, sprites, scale, frac, dark)
    _grain(rng, cv.img, scale)
    size = (out_size, out_size)
    image = cv2.resize(np.clip(cv.img, 0, 255), size, interpolation=cv2.INTER_AREA)
    cover = cv2.resize(cv.cover, size, interpolation=cv2.INTER_AREA)
    faint = cv2.resize(cv.faint, size, interpolation=cv2.INTER_AREA)
    mask = _truth(cover, faint, MASK_COVERAGE)
    if rng.random() < BLUR_PROB:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 0.8))
    image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < JPEG_PROB:
        q = int(rng.integers(*JPEG_QUALITY))
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            image = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return image, mask


def dust_scan(photo_bgr_uint8, rng: np.random.Generator, sprites=None, dark: bool = True,
              dust: bool = True):
    """Dust a whole photo as if it were a film scan at its own resolution.

    Returns (scan BGR uint8, truth uint8 at the same size: 255 dust, 128 dust too faint to
    see (don't care, as in realdust-dev), 0 clean). For sample scans and evaluation sets: the
    same generator as the training tiles, applied to one full frame. dust=False: grain only
    (a clean frame, for false positives per megapixel).
    """
    img = photo_bgr_uint8.astype(np.float32)
    scale = max(img.shape[:2]) / REFERENCE_LONG
    _texture(rng, img, max(max(img.shape[:2]) / WORKING_SIZE, 1.0))
    cv = _Canvas(img, scale, texture_visible=0.0)       # truth by realdust-dev's rule
    if dust:
        _add_dust(rng, cv, sprites, scale, 1.0, dark)
    _grain(rng, cv.img, scale)
    truth = _truth(cv.cover, cv.faint, 0.5)
    return np.clip(cv.img + 0.5, 0, 255).astype(np.uint8), truth


# Shares a run may set for its pools (`dustspot train --generator NAME=VALUE`, repeatable): the
# knobs experiments on the generator turn (session 17: more dim busy scenes). Each pool records
# them, and a pool built with other values is rebuilt; the held-out frames keep the defaults.
GENERATOR_SHARES = ("DARK_PROB", "DARK_SCENE_PROB", "DIM_SHARPEN_PROB", "FLAT_DUST_PROB",
                    "FAINT_PROB", "SHADOW_DUST_PROB", "NEUTRAL_DUST_PROB", "TRANSMIT_PROB",
                    "BUSY_PLACE_PROB", "BUSY_ANY_LUMA_PROB", "SHARPEN_PROB", "SCENE_NOISE_PROB", "BLUR_PROB",
                    "JPEG_PROB", "EMPTY_PROB", "SCRATCH_PROB", "STARFIELD_PROB", "HIGHLIGHT_PROB",
                    "SCENE_BLOB_PROB", "TEXT_PROB", "TEXTURE_PROB", "SHADOW_TWIN_PROB",
                    "GLOW_TWIN_PROB")


# Shares drawn once per dust object that may also be set for dark dust alone, as DARK:NAME=VALUE
# (session 22: the visible shares that ease the switch on dark dust made the network call
# every bright fleck in a busy scene bright dust, because they act on both polarities).
DARK_SHARES = ("FLAT_DUST_PROB", "FAINT_PROB", "BUSY_PLACE_PROB", "BUSY_ANY_LUMA_PROB")
DARK_PREFIX = "DARK:"
_dark_only = {}                     # {NAME: share} for dark dust; bright dust keeps the module's


def _share(name, dark):
    """The share NAME for dust of this polarity: a DARK: override for dark dust, else the module's."""
    return _dark_only.get(name, globals()[name]) if dark else globals()[name]


def generator_setting(text):
    """("NAME", value) of a NAME=VALUE (or DARK:NAME=VALUE) override; a ValueError saying what is
    wrong."""
    name, sep, value = text.partition("=")
    name = name.strip().upper()
    known = name in GENERATOR_SHARES or (name.startswith(DARK_PREFIX) and name[len(DARK_PREFIX):] in DARK_SHARES)
    if not sep or not known:
        raise ValueError(f"{text!r}: give NAME=VALUE with NAME one of {', '.join(GENERATOR_SHARES)}, "
                         f"or {DARK_PREFIX}NAME (dark dust only) with NAME one of {', '.join(DARK_SHARES)}")
    try:
        share = float(value)
    except ValueError:
        raise ValueError(f"{text!r}: {value!r} is not a number") from None
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"{text!r}: {name} is a share, from 0 to 1")
    return name, share


@contextlib.contextmanager
def overridden(settings):
    """Within the block the generator draws with these shares ({NAME: value}, as
    generator_setting checks them) instead of the module's; the defaults come back after."""
    settings = dict(generator_setting(f"{k}={v}") for k, v in (settings or {}).items())
    dark = {k[len(DARK_PREFIX):]: v for k, v in settings.items() if k.startswith(DARK_PREFIX)}
    shares = {k: v for k, v in settings.items() if not k.startswith(DARK_PREFIX)}
    saved, saved_dark = {name: globals()[name] for name in shares}, dict(_dark_only)
    globals().update(shares)
    _dark_only.update(dark)
    try:
        yield
    finally:
        globals().update(saved)
        _dark_only.clear()
        _dark_only.update(saved_dark)

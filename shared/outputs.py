"""Rendering the per-scan outputs of DESIGN.md: mask, report, overlay, probability map."""
import io
import re

import cv2
import numpy as np

from . import defaults
from .imageio import encode_jpeg, encode_png

PNG_COMPRESSION = defaults.PNG_COMPRESSION

SUFFIX_MASK = ".mask.png"
SUFFIX_REPORT = ".json"
SUFFIX_OVERLAY = ".overlay.jpg"
SUFFIX_PROB = ".prob.png"
CLEAN_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif"}
# Names of the files above (and the cleaned copy), so that folder walks never take them for scans.
_OUTPUT_NAME = re.compile(r"\.(mask\.png|prob\.png|overlay\.jpg|clean\.[^./]+)$", re.IGNORECASE)
# Every suffix dustspot writes beside a scan's stem, the report excepted.
OUTPUT_SUFFIXES = frozenset({SUFFIX_MASK, SUFFIX_OVERLAY, SUFFIX_PROB,
                             *(".clean" + ext for ext in CLEAN_EXTENSIONS.values())})


def is_output_name(name: str) -> bool:
    """True for a file dustspot wrote beside a scan's stem (x.mask.png, x.clean.tif, ...)."""
    return bool(_OUTPUT_NAME.search(name))


def encode_clean(pixels: np.ndarray, fmt: str, icc_profile: bytes | None = None,
                 exif: bytes | None = None) -> tuple[str, bytes]:
    """The healed scan in the input's format and bit depth: (suffix, bytes).

    Metadata is kept where the format and its writer allow: the ICC profile (JPEG, 8-bit
    PNG, TIFF) and the EXIF block (JPEG, orientation reset: the pixels are upright).
    """
    ext = CLEAN_EXTENSIONS[fmt]
    icc_profile = icc_profile if _profile_fits(icc_profile, pixels) else None
    if pixels.dtype == np.uint8 and fmt in ("JPEG", "PNG"):
        from PIL import Image
        rgb = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        extra = {"icc_profile": icc_profile} if icc_profile else {}
        if fmt == "JPEG":
            extra.update(quality=95, **({"exif": exif} if exif else {}))
        else:
            extra.update(compress_level=PNG_COMPRESSION)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, fmt, **extra)
        return ".clean" + ext, buffer.getvalue()
    if fmt == "TIFF":
        import tifffile
        buffer = io.BytesIO()
        data = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)
        tifffile.imwrite(buffer, data, photometric="minisblack" if data.ndim == 2 else "rgb",
                         compression="zlib", iccprofile=icc_profile)
        return ".clean" + ext, buffer.getvalue()
    ok, buf = cv2.imencode(ext, pixels)           # 16-bit PNG: no metadata writer at hand
    if not ok:
        raise ValueError(f"encoding the cleaned image as {fmt} failed")
    return ".clean" + ext, buf.tobytes()


def _profile_fits(icc_profile: bytes | None, pixels: np.ndarray) -> bool:
    """Whether an ICC profile describes pixels like these: its data colour space (header bytes
    16-19) is RGB for colour, GRAY for gray.  A CMYK scan is decoded to BGR, so its CMYK
    profile would make colour-managed viewers show the cleaned copy in wrong colours."""
    if not icc_profile or len(icc_profile) < 20:
        return False
    return icc_profile[16:20] == (b"GRAY" if pixels.ndim == 2 else b"RGB ")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    if pixels.dtype == np.uint8:
        return pixels
    return (pixels >> 8).astype(np.uint8)        # uint16 -> uint8, no float copy


def render_overlay(pixels: np.ndarray, spots: list[dict],
                   long_side: int = defaults.OVERLAY_LONG_SIDE) -> np.ndarray:
    """A reduced copy of the scan with every spot circled (visible even when tiny)."""
    h, w = pixels.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    small = cv2.resize(pixels, (max(1, round(w * scale)), max(1, round(h * scale))),
                       interpolation=cv2.INTER_AREA)
    small = to_uint8(small)
    if small.ndim == 2:
        small = cv2.cvtColor(small, cv2.COLOR_GRAY2BGR)
    for spot in spots:
        x, y, bw, bh = spot["bbox"]
        cx, cy = spot["centroid"]
        radius = max(4, round(max(bw, bh) * scale / 2) + 3)
        cv2.circle(small, (round(cx * scale), round(cy * scale)), radius, (0, 0, 255), 1, cv2.LINE_AA)
    return small


def encode_outputs(mask: np.ndarray, prob8: np.ndarray | None, overlay: np.ndarray | None) -> dict:
    """Encode the image outputs: {suffix: bytes}."""
    files = {SUFFIX_MASK: encode_png(mask)}
    if prob8 is not None:
        files[SUFFIX_PROB] = encode_png(prob8)
    if overlay is not None:
        files[SUFFIX_OVERLAY] = encode_jpeg(overlay)
    return files

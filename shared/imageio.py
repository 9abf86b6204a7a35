"""Reading scans into arrays, and encoding result images.

Decoding is OpenCV's (fast, 8- and 16-bit, CMYK JPEG); the header is read first with
Pillow, which parses it without decoding pixels, so the size limit, the format and the
EXIF orientation are known before any large allocation. Pixels stay in the file's own
depth (uint8 or uint16, BGR or gray); nothing full-resolution is ever float64.
"""
import io
import os
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from . import defaults
from .errors import ImageError

# Our own pixel limit (checked below) replaces Pillow's decompression-bomb guard.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "TIFF": ".tif"}
_DECODE_FLAGS = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR | cv2.IMREAD_IGNORE_ORIENTATION
_EXIF_ORIENTATION = 0x0112
_EXIF_MAX_BYTES = 65533         # an APP1 segment's payload ("Exif\0\0" included), as Pillow checks it
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")    # classic TIFF, BigTIFF


@dataclass
class Scan:
    """A decoded scan as displayed: EXIF orientation applied, alpha dropped."""
    pixels: np.ndarray          # HxW (gray) or HxWx3 (BGR); uint8 or uint16
    source: str
    format: str                 # JPEG | PNG | TIFF
    orientation: int = 1        # the EXIF orientation that was applied
    pages: int = 1              # multi-page TIFF: only the first page is used
    icc_profile: bytes | None = None
    exif: bytes | None = None   # EXIF with orientation reset to 1 (the pixels are upright)

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def max_value(self) -> int:
        return 65535 if self.pixels.dtype == np.uint16 else 255


@dataclass
class Header:
    format: str
    width: int                  # as stored, before orientation
    height: int
    mode: str
    orientation: int
    pages: int
    icc_profile: bytes | None = None
    exif: bytes | None = None
    tiff_layout: str | None = None  # set when only tifffile reads the file (it decodes it too)


def _read_tiff_header(source: str, data: bytes | None) -> Header | None:
    """The header of a TIFF that Pillow cannot open, read by tifffile; None if tifffile cannot either."""
    # Pillow refuses some valid layouts (16-bit gray + alpha, for one) that tifffile decodes.
    import tifffile

    try:
        if data is None:
            with open(source, "rb") as f:
                signature = f.read(4)
        else:
            signature = data[:4]
        if signature not in _TIFF_SIGNATURES:
            return None
        with tifffile.TiffFile(io.BytesIO(data) if data is not None else source) as tif:
            page = tif.pages[0]         # tags only: no pixels are read here
            photometric = getattr(page.photometric, "name", page.photometric)
            layout = f"{page.samplesperpixel} samples, photometric {photometric}, shape {page.shape}"
            mode = {np.dtype(np.uint8): "L", np.dtype(np.uint16): "I;16"}.get(page.dtype)
            if mode is None:
                raise ImageError(source, f"unsupported sample type {page.dtype} ({page.bitspersample}-bit): "
                                         "only 8- and 16-bit integer images are supported")
            if page.samplesperpixel > 4 or page.imagedepth > 1:    # would decode to more than the pixel limit
                raise ImageError(source, f"unsupported TIFF layout: {layout}")
            return Header("TIFF", page.imagewidth, page.imagelength, mode, int(page.tags.valueof(274, 1)),
                          len(tif.pages), page.tags.valueof(34675), None, layout)
    except ImageError:
        raise
    except Exception:               # tifffile raises assorted types on hostile files
        return None


def read_header(source: str, data: bytes | None = None) -> Header:
    """Parse only the header (Pillow opens lazily); raises ImageError for non-images."""
    try:
        with Image.open(io.BytesIO(data) if data is not None else source) as im:
            orientation, exif = 1, None
            try:
                tags = im.getexif()
                orientation = int(tags.get(_EXIF_ORIENTATION, 1))
                if im.format == "JPEG" and len(tags):
                    if _EXIF_ORIENTATION in tags:
                        tags[_EXIF_ORIENTATION] = 1    # outputs are written upright
                    exif = tags.tobytes()
                    if len(exif) > _EXIF_MAX_BYTES:    # cannot go back into a JPEG: keep none
                        exif = None
            except Exception:       # a broken EXIF block is no reason to refuse the pixels
                pass
            return Header(im.format or "?", im.width, im.height, im.mode, orientation,
                          getattr(im, "n_frames", 1), im.info.get("icc_profile"), exif)
    except UnidentifiedImageError:
        header = _read_tiff_header(source, data)
        if header is None:
            raise ImageError(source, "not an image (unrecognised file content)") from None
        return header
    except FileNotFoundError:
        raise ImageError(source, "file not found") from None
    except IsADirectoryError:
        raise ImageError(source, "is a directory") from None
    except OSError as exc:
        raise ImageError(source, f"unreadable image header ({exc})") from None
    except Exception as exc:        # Pillow raises assorted types on hostile headers
        raise ImageError(source, f"invalid image header ({type(exc).__name__}: {exc})") from None


def check_header(source: str, header: Header, max_pixels: int) -> None:
    if header.format not in SUPPORTED_FORMATS:
        raise ImageError(source, f"unsupported format {header.format} (supported: JPEG, PNG, TIFF)")
    if header.width < 1 or header.height < 1:
        raise ImageError(source, f"empty image ({header.width}x{header.height})")
    pixels = header.width * header.height
    if pixels > max_pixels:
        raise ImageError(source, f"{header.width}x{header.height} ({pixels / 1e6:.0f} MP) exceeds "
                                 f"the pixel limit of {max_pixels / 1e6:.0f} MP")
    if header.mode in ("F", "I") or header.mode.startswith("I;32") or header.mode.startswith("F;"):
        raise ImageError(source, f"unsupported sample type (Pillow mode {header.mode}): "
                                 "only 8- and 16-bit integer images are supported")


def _jpeg_is_complete(source: str, data: bytes | None) -> bool:
    """True when the JPEG stream ends with an EOI marker.

    libjpeg decodes a truncated file without an error (it pads the missing rows grey), so
    truncation has to be caught here. 0xFFD9 cannot occur inside entropy-coded data, and
    some cameras append a trailer after EOI, hence a search of the tail, not a suffix test.
    """
    if data is not None:
        tail = data[-65536:]
    else:
        with open(source, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            tail = f.read()
    return b"\xff\xd9" in tail


def _orient(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation (1-8) so the array is as the image is displayed.

    The table is Pillow's ImageOps.exif_transpose one, written with numpy views.
    """
    transforms = {
        2: lambda a: a[:, ::-1],                       # mirror left-right
        3: lambda a: a[::-1, ::-1],                    # rotate 180
        4: lambda a: a[::-1],                          # mirror top-bottom
        5: lambda a: a.swapaxes(0, 1),                 # transpose
        6: lambda a: np.rot90(a, -1),                  # rotate 90 clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),     # transverse
        8: lambda a: np.rot90(a, 1),                   # rotate 90 counter-clockwise
    }
    if orientation not in transforms:
        return pixels
    return np.ascontiguousarray(transforms[orientation](pixels))


def _utf8_path(path: str) -> bool:
    try:
        path.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _decode_tiff_as_stored(source: str, data: bytes | None) -> np.ndarray | None:
    """The first page of a TIFF as stored, in OpenCV's channel order (BGR or gray).

    OpenCV ignores IMREAD_IGNORE_ORIENTATION for TIFF: it applies orientations 2-4 itself (and
    _orient would apply them again) and fails on 5-8, so an oriented TIFF is decoded by
    tifffile, which never reorients.  ValueError(reason) when tifffile cannot read it (LZW and
    JPEG compression need the optional imagecodecs package), None for a layout it does not map.
    """
    import tifffile

    try:
        with tifffile.TiffFile(io.BytesIO(data) if data is not None else source) as tif:
            page = tif.pages[0]
            pixels = page.asarray()
            photometric, planar, bits = page.photometric, page.planarconfig, page.bitspersample
            colormap = page.colormap if photometric == tifffile.PHOTOMETRIC.PALETTE else None
    except Exception as exc:
        raise ValueError(str(exc)) from None
    if pixels.dtype not in (np.uint8, np.uint16):
        return pixels                   # refused by the caller's sample-type check
    if pixels.ndim == 3 and planar == tifffile.PLANARCONFIG.SEPARATE:
        pixels = np.moveaxis(pixels, 0, -1)          # samples first -> interleaved
    if pixels.ndim == 3 and pixels.shape[2] == 2:    # gray + alpha
        pixels = pixels[:, :, 0]
    top = (1 << bits) - 1
    if pixels.ndim == 3 and photometric == tifffile.PHOTOMETRIC.SEPARATED and pixels.shape[2] >= 4:
        # CMYK, as OpenCV converts it: each of R, G, B = (max - C|M|Y) * (max - K) // max, in
        # integers (exact), one channel at a time (a 16-bit scan's products need 64 bits)
        wide = np.uint32 if top <= 0xFFFF else np.uint64
        paper = top - pixels[:, :, 3].astype(wide)
        bgr = np.empty(pixels.shape[:2] + (3,), pixels.dtype)
        for out, ink in enumerate((2, 1, 0)):              # Y -> B, M -> G, C -> R
            bgr[:, :, out] = (top - pixels[:, :, ink].astype(wide)) * paper // top
        pixels = bgr
    elif pixels.ndim == 3:
        if photometric != tifffile.PHOTOMETRIC.RGB or pixels.shape[2] not in (3, 4):
            return None
        pixels = pixels[:, :, 2::-1]                 # RGB(A) -> BGR
    elif pixels.ndim != 2:
        return None
    elif photometric == tifffile.PHOTOMETRIC.MINISWHITE:   # 0 is white: as OpenCV and Pillow show it
        pixels = (top - pixels).astype(pixels.dtype)
    elif colormap is not None and pixels.dtype == np.uint8:  # palette: 16-bit colour table, 8-bit image
        pixels = np.ascontiguousarray((colormap[::-1] >> 8).astype(np.uint8).T[pixels])
    elif photometric != tifffile.PHOTOMETRIC.MINISBLACK:
        return None
    return np.ascontiguousarray(pixels)


def read_scan(source: str, data: bytes | None = None, max_pixels: int = defaults.MAX_PIXELS) -> Scan:
    """Decode a scan from a local path (or from `data`, its bytes, when given).

    Raises ImageError naming `source` and the reason for anything that is not a usable
    8/16-bit JPEG, PNG or TIFF.
    """
    source = str(source)
    if data is None and not _utf8_path(source) and os.path.isfile(source):
        # OpenCV takes paths as UTF-8 C strings; a name that is not valid UTF-8 (Linux
        # allows any bytes) crashes it, so such a file is read here and decoded from memory.
        with open(source, "rb") as f:
            data = f.read()
    if data is None and os.path.isfile(source) and os.path.getsize(source) == 0:
        raise ImageError(source, "empty file (0 bytes)")
    if data is not None and len(data) == 0:
        raise ImageError(source, "empty file (0 bytes)")
    header = read_header(source, data)
    check_header(source, header, max_pixels)
    if header.format == "JPEG" and not _jpeg_is_complete(source, data):
        raise ImageError(source, "truncated JPEG (no end-of-image marker)")
    oriented = False                   # the decoder applied the orientation itself
    try:
        pixels = None
        if header.format == "TIFF" and (header.orientation != 1 or header.tiff_layout):
            try:
                pixels = _decode_tiff_as_stored(source, data)
            except ValueError as exc:
                if header.tiff_layout:
                    raise ImageError(source, f"corrupt or truncated TIFF data ({exc})") from None
                if header.orientation not in (2, 3, 4):
                    raise ImageError(source, f"TIFF with EXIF orientation {header.orientation} that "
                                             f"cannot be decoded upright here ({exc})") from None
                oriented = True        # OpenCV decodes it and applies orientations 2-4 itself
            if pixels is None and header.tiff_layout:       # OpenCV cannot read it either
                raise ImageError(source, f"unsupported TIFF layout: {header.tiff_layout}")
            if pixels is None and not oriented:
                # OpenCV would apply orientations 2-4 itself (and _orient again), and fails on 5-8
                raise ImageError(source, f"TIFF with EXIF orientation {header.orientation} in a layout "
                                         f"that cannot be decoded upright here")
        if pixels is None and data is not None:
            pixels = cv2.imdecode(np.frombuffer(data, np.uint8), _DECODE_FLAGS)
        elif pixels is None:
            pixels = cv2.imread(source, _DECODE_FLAGS)
        if pixels is None and header.format == "TIFF" and header.orientation == 1:
            try:                       # layouts OpenCV refuses (16-bit CMYK) that tifffile maps
                pixels = _decode_tiff_as_stored(source, data)
            except ValueError:
                pass
    except cv2.error as exc:
        raise ImageError(source, f"decoder failed ({exc.err})") from None
    if pixels is None:
        raise ImageError(source, f"corrupt or truncated {header.format} data (decoder failed)")
    if pixels.dtype not in (np.uint8, np.uint16):
        raise ImageError(source, f"unsupported sample type {pixels.dtype}")
    if pixels.ndim == 3 and pixels.shape[2] == 4:       # defensive: alpha is never used
        pixels = np.ascontiguousarray(pixels[:, :, :3])
    if not oriented:
        pixels = _orient(pixels, header.orientation)
    return Scan(pixels, source, header.format, header.orientation, header.pages,
                header.icc_profile, header.exif)


def encode_png(array: np.ndarray, compression: int = defaults.PNG_COMPRESSION) -> bytes:
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise ValueError("PNG encoding failed")
    return buf.tobytes()


def encode_jpeg(array: np.ndarray, quality: int = 85) -> bytes:
    ok, buf = cv2.imencode(".jpg", array, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()

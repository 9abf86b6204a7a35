"""Writers for test scans in real formats, including broken and hostile ones."""
import struct
import zlib

import cv2
import numpy as np
from PIL import Image


def write(path, pixels, **params) -> str:
    """Write with OpenCV (BGR / gray, 8 or 16 bit); returns the path."""
    assert cv2.imwrite(str(path), pixels), path
    return str(path)


def write_with_orientation(path, rgb: np.ndarray, orientation: int) -> str:
    """A JPEG whose EXIF says how to rotate the stored pixels for display."""
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(str(path), exif=exif, quality=95)
    return str(path)


def write_png_claiming(path, width: int, height: int) -> str:
    """A tiny PNG whose header claims width x height (a decompression bomb's calling card)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)   # 8-bit gray
    body = zlib.compress(b"\x00" * 1024)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return str(path)


def write_truncated_jpeg(path, pixels) -> str:
    ok, buf = cv2.imencode(".jpg", pixels)
    data = buf.tobytes()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    return str(path)


def write_tiff_with_alpha(path, pixels, planar: bool = False, orientation: int = 1) -> str:
    """A gray + alpha TIFF (HxWx2, any dtype) written by tifffile: a layout Pillow cannot open."""
    import tifffile
    tifffile.imwrite(str(path), np.moveaxis(pixels, -1, 0) if planar else pixels, photometric="minisblack",
                     extrasamples=["unassalpha"], planarconfig="separate" if planar else "contig",
                     extratags=[(0x0112, "H", 1, orientation, False)] if orientation != 1 else [])
    return str(path)

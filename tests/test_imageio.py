"""Image input: formats, depths, orientation, limits, and clear errors for bad files."""
import tracemalloc

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from shared.errors import ImageError
from shared.imageio import read_scan
from tests.conftest import textured
from tests.scans import (
    write,
    write_png_claiming,
    write_tiff_with_alpha,
    write_truncated_jpeg,
    write_with_orientation,
)


def test_jpeg_png_tiff_8_and_16_bit(tmp_path):
    rgb8, rgb16 = textured(40, 60), textured(40, 60, dtype=np.uint16)
    for name, pixels in [("a.png", rgb8), ("b.tif", rgb8), ("c.tif", rgb16), ("d.png", rgb16)]:
        scan = read_scan(write(tmp_path / name, pixels))
        assert scan.pixels.dtype == pixels.dtype and scan.pixels.shape == (40, 60, 3)
        np.testing.assert_array_equal(scan.pixels, pixels)
    jpeg = read_scan(write(tmp_path / "e.jpg", rgb8))
    assert jpeg.format == "JPEG" and jpeg.pixels.shape == (40, 60, 3)


def test_grayscale_rgba_palette_cmyk(tmp_path):
    gray = read_scan(write(tmp_path / "g.png", textured(30, 50, channels=1)))
    assert gray.pixels.shape == (30, 50)
    rgba = np.dstack([textured(30, 50), np.full((30, 50), 7, np.uint8)])
    assert read_scan(write(tmp_path / "rgba.png", rgba)).pixels.shape == (30, 50, 3)
    Image.fromarray(textured(30, 50)).convert("P").save(tmp_path / "p.png")
    assert read_scan(str(tmp_path / "p.png")).pixels.shape == (30, 50, 3)
    Image.fromarray(textured(30, 50)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    assert read_scan(str(tmp_path / "cmyk.jpg")).pixels.shape == (30, 50, 3)


@pytest.mark.parametrize("orientation,shape", [(1, (40, 60)), (3, (40, 60)), (6, (60, 40)), (8, (60, 40)),
                                               (5, (60, 40)), (2, (40, 60))])
def test_exif_orientation_gives_the_displayed_image(tmp_path, orientation, shape):
    rgb = textured(40, 60, seed=orientation)
    path = write_with_orientation(tmp_path / f"o{orientation}.jpg", rgb, orientation)
    scan = read_scan(path)
    assert scan.pixels.shape[:2] == shape and scan.orientation == orientation
    from PIL import ImageOps
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))[:, :, ::-1]   # RGB -> BGR
    assert np.abs(scan.pixels.astype(int) - displayed).mean() < 2       # same pixels, two JPEG decoders


@pytest.mark.parametrize("photometric", ["separated", "miniswhite", "palette", "separated16"])
def test_oriented_tiffs_of_every_layout_are_upright_once(tmp_path, photometric):
    # OpenCV applies TIFF orientations 2-4 itself and fails on 5-8: these layouts go through
    # tifffile as stored, then get the orientation exactly once, with OpenCV's colours
    import tifffile
    rng = np.random.default_rng(3)
    extra = {}
    if photometric.startswith("separated"):
        depth = np.uint16 if photometric.endswith("16") else np.uint8
        stored = rng.integers(0, np.iinfo(depth).max, (40, 60, 4), dtype=depth)
        photometric = "separated"
    elif photometric == "palette":
        stored = rng.integers(0, 16, (40, 60), dtype=np.uint8)
        extra["colormap"] = rng.integers(0, 65535, (3, 256), dtype=np.uint16)
    else:
        stored = rng.integers(0, 255, (40, 60), dtype=np.uint8)
    scans = {}
    for orientation in (1, 2, 3, 6, 8):
        path = tmp_path / f"o{orientation}.tif"
        tifffile.imwrite(path, stored, photometric=photometric, extratags=[(274, "H", 1, orientation, True)], **extra)
        scans[orientation] = read_scan(str(path)).pixels
    upright = scans[1]
    assert upright.shape[:2] == (40, 60) and upright.dtype == stored.dtype
    assert np.array_equal(scans[2], upright[:, ::-1]) and np.array_equal(scans[3], upright[::-1, ::-1])
    assert np.array_equal(scans[6], np.rot90(upright, -1)) and np.array_equal(scans[8], np.rot90(upright, 1))
    if photometric == "miniswhite":
        assert np.array_equal(upright, 255 - stored)          # 0 is white


def test_pixel_limit_refuses_from_the_header(tmp_path):
    path = write_png_claiming(tmp_path / "bomb.png", 100000, 100000)
    tracemalloc.start()
    with pytest.raises(ImageError, match="exceeds the pixel limit") as err:
        read_scan(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "bomb.png" in str(err.value) and "100000x100000" in str(err.value)
    assert peak < 20 * 2**20        # refused before any large allocation
    small = write(tmp_path / "ok.png", textured(100, 100))
    with pytest.raises(ImageError, match="pixel limit"):
        read_scan(small, max_pixels=5000)


@pytest.mark.parametrize("kind,reason", [
    ("zero", "empty file"), ("text", "not an image"), ("truncated", "truncated JPEG"),
    ("random", "not an image"), ("html", "not an image"), ("float", "unsupported sample type"),
    ("gif", "unsupported format GIF"), ("truncated_png", "corrupt or truncated PNG")])
def test_bad_files_raise_image_error_naming_file_and_reason(tmp_path, kind, reason):
    path = tmp_path / f"bad-{kind}.png"
    if kind == "zero":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("hello, I am not a picture\n")
    elif kind == "truncated":
        path = tmp_path / "bad.jpg"
        write_truncated_jpeg(path, textured(300, 400))
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif kind == "html":
        path = tmp_path / "page.jpg"
        path.write_text("<!doctype html><html><body>Not found</body></html>")
    elif kind == "float":
        path = tmp_path / "float.tif"
        cv2.imwrite(str(path), np.random.rand(20, 30).astype(np.float32))
    elif kind == "gif":
        path = tmp_path / "anim.gif"
        frames = [Image.fromarray(textured(20, 30, seed=i)) for i in range(3)]
        frames[0].save(path, save_all=True, append_images=frames[1:])
    elif kind == "truncated_png":
        ok, buf = cv2.imencode(".png", textured(200, 200))
        path.write_bytes(buf.tobytes()[:3000])
    with pytest.raises(ImageError) as err:
        read_scan(str(path))
    assert str(path) in str(err.value) and reason in str(err.value)


def _gray_alpha16(height=64, width=80):
    return (np.random.default_rng(0).random((height, width, 2)) * 65535).astype(np.uint16)


@pytest.mark.parametrize("planar", [False, True])
def test_16_bit_gray_alpha_tiff_that_pillow_cannot_open(tmp_path, planar):
    pixels = _gray_alpha16()
    path = write_tiff_with_alpha(tmp_path / "ga.tif", pixels, planar=planar)
    for scan in (read_scan(path), read_scan(path, data=(tmp_path / "ga.tif").read_bytes())):
        assert scan.format == "TIFF" and scan.pixels.dtype == np.uint16 and scan.orientation == 1
        np.testing.assert_array_equal(scan.pixels, pixels[:, :, 0])      # the gray plane, alpha dropped


@pytest.mark.parametrize("planar", [False, True])
def test_16_bit_gray_alpha_tiff_with_orientation_6_is_upright(tmp_path, planar):
    pixels = _gray_alpha16()
    scan = read_scan(write_tiff_with_alpha(tmp_path / "ga6.tif", pixels, planar=planar, orientation=6))
    assert scan.orientation == 6 and scan.pixels.shape == (80, 64)
    np.testing.assert_array_equal(scan.pixels, np.rot90(pixels[:, :, 0], -1))   # 90 degrees clockwise
    assert scan.pixels[0, 0] == pixels[-1, 0, 0]        # the stored bottom-left is displayed top-left


def test_16_bit_gray_alpha_tiff_pixel_limit_refuses_from_the_header(tmp_path, monkeypatch):
    def no_decoding(*args):
        raise AssertionError("decoded despite the pixel limit")
    monkeypatch.setattr("shared.imageio._decode_tiff_as_stored", no_decoding)
    path = write_tiff_with_alpha(tmp_path / "ga.tif", _gray_alpha16())
    with pytest.raises(ImageError, match="exceeds the pixel limit") as err:
        read_scan(path, max_pixels=1000)
    assert "ga.tif" in str(err.value) and "80x64" in str(err.value)
    data = bytearray((tmp_path / "ga.tif").read_bytes())   # now make the header claim 100000x100000
    with tifffile.TiffFile(path) as tif:
        for code in (256, 257):                        # ImageWidth, ImageLength: LONG values in the IFD
            offset = tif.pages[0].tags[code].valueoffset
            data[offset:offset + 4] = (100000).to_bytes(4, "little")
    (tmp_path / "bomb.tif").write_bytes(data)
    tracemalloc.start()
    with pytest.raises(ImageError, match="100000x100000 .* exceeds the pixel limit"):
        read_scan(str(tmp_path / "bomb.tif"))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20 * 2**20


@pytest.mark.parametrize("kind,reason", [("float", "unsupported sample type float32"),
                                         ("three_gray", "unsupported TIFF layout: 3 samples, photometric MINISBLACK"),
                                         ("garbage", "not an image")])
def test_tiffs_pillow_cannot_open_are_refused_naming_file_and_reason(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.tif"
    if kind == "float":
        write_tiff_with_alpha(path, np.random.default_rng(0).random((20, 30, 2)).astype(np.float32))
    elif kind == "three_gray":
        tifffile.imwrite(path, _gray_alpha16()[:, :, [0, 1, 0]], photometric="minisblack", planarconfig="contig")
    else:
        path.write_bytes(b"II*\0" + np.random.default_rng(0).bytes(5000))
    for data in (None, path.read_bytes()):
        with pytest.raises(ImageError) as err:
            read_scan(str(path), data=data)
        assert str(path) in str(err.value) and reason in str(err.value)


def test_never_float64(tmp_path):
    scan = read_scan(write(tmp_path / "x.tif", textured(64, 64, dtype=np.uint16)))
    assert scan.pixels.dtype == np.uint16

"""Image input: formats, depths, orientation, limits, and clear errors for bad files."""
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image

from shared.errors import ImageError
from shared.imageio import read_scan
from tests.conftest import textured
from tests.scans import write, write_png_claiming, write_truncated_jpeg, write_with_orientation


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


def test_never_float64(tmp_path):
    scan = read_scan(write(tmp_path / "x.tif", textured(64, 64, dtype=np.uint16)))
    assert scan.pixels.dtype == np.uint16

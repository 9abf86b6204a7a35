"""Review findings of session 9 on `dustspot segment` and the pipeline, each reproduced first."""
import json
import os
import time

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from shared.errors import ImageError, ProcessingError
from shared.imageio import _orient, read_scan
from shared.pipeline import process_scan
from tests.conftest import textured
from tests.scans import write
from tests.test_cli import run_cli


@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_exif_orientation_gives_the_displayed_image(tmp_path, orientation):
    # OpenCV applies orientations 2-4 of a TIFF itself despite IMREAD_IGNORE_ORIENTATION (they
    # were applied twice) and fails on 5-8; both must match the displayed image.
    rgb = textured(40, 60, seed=orientation)[:, :, ::-1]
    path = tmp_path / f"o{orientation}.tif"
    tifffile.imwrite(path, rgb, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
    scan = read_scan(str(path))
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))[:, :, ::-1]
    assert scan.orientation == orientation
    assert scan.pixels.shape == displayed.shape and (scan.pixels == displayed).all()

    gray16 = (textured(40, 60, seed=9, channels=1).squeeze().astype(np.uint16) * 257)
    path16 = tmp_path / f"g{orientation}.tif"
    tifffile.imwrite(path16, gray16, photometric="minisblack", extratags=[(274, "H", 1, orientation, True)])
    scan16 = read_scan(str(path16))
    assert scan16.pixels.dtype == np.uint16 and (scan16.pixels == _orient(gray16, orientation)).all()


def test_jpeg_with_a_full_exif_block_keeps_working_with_inpaint(tmp_path, make_session):
    # 65,522 bytes of EXIF and no orientation tag: adding orientation=1 made it too long to
    # write back into the cleaned JPEG (Pillow: "EXIF data is too long"), and no report was left.
    exif = Image.Exif()
    exif[0x010E] = "x" * 65488                  # ImageDescription
    assert 0x0112 not in exif and len(exif.tobytes()) == 65522
    path = tmp_path / "full-exif.jpg"
    Image.fromarray(textured(120, 160, seed=3)[:, :, ::-1]).save(path, exif=exif, quality=90)
    report = process_scan(str(path), str(tmp_path / "out"), "full-exif.jpg",
                          make_session("conv", working_size=256, inpaint=True))
    assert report["status"] == "ok"
    clean = Image.open(tmp_path / "out" / "full-exif.clean.jpg")
    assert clean.size == (160, 120) and clean.getexif().get(0x010E, "").startswith("xxx")


def test_an_unforeseen_error_leaves_a_failed_report_and_a_dustspot_error(tmp_path, make_session, monkeypatch):
    from shared import pipeline

    def broken_heal(*args):
        raise ValueError("something no one foresaw")

    monkeypatch.setattr(pipeline, "heal", broken_heal)      # a bug in a collaborator
    path = write(tmp_path / "a.png", textured(100, 120, seed=1))
    out = tmp_path / "out"
    (out).mkdir()
    (out / "a.json").write_text(json.dumps({"status": "ok", "note": "an earlier run"}))
    with pytest.raises(ProcessingError, match="a.png: internal error \\(ValueError: something no one"):
        process_scan(str(path), str(out), "a.png", make_session("conv", working_size=256, inpaint=True))
    report = json.loads((out / "a.json").read_text())
    assert report["status"] == "failed" and "ValueError" in report["errors"][0]


def test_scans_whose_outputs_would_clash_are_refused_not_overwritten(tmp_path, registry_root):
    src = tmp_path / "scans"
    src.mkdir()
    write(src / "x.png", textured(100, 140, seed=1))
    write(src / "x.tif", textured(90, 90, seed=2, dtype=np.uint16))
    write(src / "y.jpg", textured(80, 100, seed=3))
    out = tmp_path / "out"
    res = run_cli(["segment", str(src), "--out", str(out), "--model", "conv", "--size", "256", "-q"],
                  registry_root)
    assert res.returncode == 1
    assert "2 of 3 scans done, 1 failed" in res.stdout
    assert "x.tif: not processed" in res.stderr and "x.png" in res.stderr
    report = json.loads((out / "x.json").read_text())
    assert report["status"] == "ok" and report["input"].endswith("x.png")
    assert report["size"] == {"width": 140, "height": 100}


def test_outputs_inside_the_input_folder_are_not_read_back_as_scans(tmp_path, registry_root):
    src = tmp_path / "scans"
    src.mkdir()
    write(src / "a.jpg", textured(100, 140, seed=1))
    args = ["segment", str(src), "--out", str(src), "--model", "conv", "--size", "256", "-q",
            "--prob", "--overlay", "--inpaint"]
    first = run_cli(args, registry_root)
    assert first.returncode == 0, first.stderr
    assert {"a.mask.png", "a.prob.png", "a.overlay.jpg", "a.clean.jpg"} <= set(os.listdir(src))
    second = run_cli(args, registry_root)
    assert second.returncode == 0, second.stderr
    assert "1 of 1 scans done" in second.stdout
    assert not [n for n in os.listdir(src) if n.count(".mask") > 1 or ".clean.clean" in n]


def test_workers_report_a_bad_option_instead_of_hanging(tmp_path, registry_root):
    src = tmp_path / "scans"
    src.mkdir()
    write(src / "a.jpg", textured(100, 140, seed=1))
    started = time.monotonic()
    res = run_cli(["segment", str(src), "--out", str(tmp_path / "out"), "--model", "conv",
                   "--workers", "2", "--tile", "32"], registry_root)
    assert res.returncode != 0
    assert "option overlap=64: must be at most half the tile (16)" in res.stderr
    assert time.monotonic() - started < 120


def test_a_cmyk_scan_cleaned_to_rgb_drops_its_cmyk_profile(tmp_path, make_session):
    from PIL import ImageCms
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    cmyk_profile = srgb[:16] + b"CMYK" + srgb[20:]        # what the header says is what counts
    cmyk = Image.fromarray(textured(90, 120, seed=4)[:, :, ::-1]).convert("CMYK")
    cmyk.save(tmp_path / "c.jpg", quality=95, icc_profile=cmyk_profile)
    report = process_scan(str(tmp_path / "c.jpg"), str(tmp_path / "out"), "c.jpg",
                          make_session("conv", working_size=256, inpaint=True))
    assert report["status"] == "ok"
    clean = Image.open(tmp_path / "out" / "c.clean.jpg")
    assert clean.mode == "RGB" and clean.info.get("icc_profile") is None


@pytest.mark.parametrize("orientation", [3, 6])
def test_an_oriented_lzw_tiff_is_upright_or_a_clear_error(tmp_path, orientation):
    # tifffile needs the optional imagecodecs package for LZW: OpenCV decodes it instead, and
    # applies orientations 2-4 itself; 5-8 cannot be made upright that way, so they are refused.
    from PIL.TiffImagePlugin import ImageFileDirectory_v2
    rgb = textured(40, 60, seed=orientation)[:, :, ::-1]
    tags = ImageFileDirectory_v2()
    tags[274] = orientation
    path = tmp_path / f"lzw{orientation}.tif"
    Image.fromarray(rgb).save(path, compression="tiff_lzw", tiffinfo=tags)
    try:
        import imagecodecs  # noqa: F401
        codecs = True
    except ImportError:
        codecs = False
    if orientation == 6 and not codecs:
        with pytest.raises(ImageError, match="orientation 6 that cannot be decoded upright"):
            read_scan(str(path))
        return
    scan = read_scan(str(path))
    displayed = np.asarray(ImageOps.exif_transpose(Image.open(path)))[:, :, ::-1]
    assert scan.pixels.shape == displayed.shape and (scan.pixels == displayed).all()

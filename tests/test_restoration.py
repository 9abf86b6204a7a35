"""Inpainting (--inpaint) and sensitivity changes without re-running the model (rethreshold)."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from shared import defaults
from shared.inpaint import is_elongated
from shared.pipeline import process_scan
from tests.conftest import textured
from tests.scans import write


def smooth_scan(dtype=np.uint8, channels=3):
    """A smooth gradient (easy to heal) with dark specks and a dark hair."""
    y, x = np.mgrid[0:200, 0:300].astype(np.float32)
    base = 120 + 60 * np.sin(x / 40) * np.cos(y / 50)
    clean = np.dstack([base, base * 0.9, base * 0.8])[:, :, :channels].squeeze()
    dust = np.zeros((200, 300), np.uint8)
    for cx, cy in [(50, 40), (220, 150), (120, 100)]:
        cv2.circle(dust, (cx, cy), 3, 255, -1)
    cv2.line(dust, (30, 170), (150, 180), 255, 1)
    img = clean.copy()
    img[dust > 0] = 10
    scale = 257 if dtype == np.uint16 else 1
    return (img * scale).astype(dtype), dust, clean * scale


@pytest.mark.parametrize("ext,dtype", [(".png", np.uint8), (".tif", np.uint16), (".jpg", np.uint8)])
def test_inpaint_heals_the_spots_in_the_input_format(tmp_path, make_session, ext, dtype):
    scan, dust, field = smooth_scan(dtype)
    path = str(tmp_path / f"scan{ext}")
    cv2.imwrite(path, scan)
    # The identity model sees channel 0: make dust bright there so it is "detected". That dust is
    # coloured by construction, so the colour test (tests/test_neutral.py) is off.
    detector = make_session("identity", mode="native", tile=128, overlap=32, threshold=0.5, inpaint=True,
                            neutral=0)
    inverted = scan.copy()
    inverted[..., 0] = np.where(dust > 0, np.iinfo(dtype).max, 0)
    cv2.imwrite(path, inverted) if ext != ".jpg" else cv2.imwrite(path, inverted, [cv2.IMWRITE_JPEG_QUALITY, 100])
    report = process_scan(path, str(tmp_path / "out"), f"scan{ext}", detector)
    clean = cv2.imread(str(tmp_path / "out" / f"scan.clean{ext}"), cv2.IMREAD_UNCHANGED)
    assert clean is not None and clean.dtype == dtype and clean.shape == scan.shape
    assert report["spot_count"] == (4 if ext != ".jpg" else report["spot_count"]) and report["spot_count"] >= 3
    # channels 1-2 had dark dust on a smooth field: healed close to the dust-free field
    scale = 257 if dtype == np.uint16 else 1
    healed_error = np.abs(clean[..., 1].astype(np.float32) - field[..., 1])[dust > 0].mean() / scale
    dusty_error = np.abs(inverted[..., 1].astype(np.float32) - field[..., 1])[dust > 0].mean() / scale
    # JPEG blurs the 1-px hair below the threshold in places: it is only partly healed.
    assert healed_error < (0.15 if ext != ".jpg" else 0.35) * dusty_error


def test_shape_picks_the_method():
    speck = np.zeros((20, 20), np.uint8)
    cv2.circle(speck, (10, 10), 4, 255, -1)
    hair = np.zeros((20, 60), np.uint8)
    cv2.line(hair, (2, 5), (57, 14), 255, 1)
    assert not is_elongated(speck) and is_elongated(hair)


def test_rethreshold_matches_a_fresh_run(tmp_path):
    """With a model that recommends a spot threshold and a minimum area, as tuned models do."""
    from tests.ovmodels import conv_model, publish_model
    registry_root = str(tmp_path / "registry")
    # random colour textures make no neutral dust: a loose colour test, run but not emptying the scans
    publish_model(conv_model(), registry_root, "conv", recommended={"spot_threshold": 0.58, "min_area": 3, "neutral": 40})
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        write(src / f"s{i}.png", textured(150, 200, seed=i))
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    common = ["--model", "conv", "--native", "--tile", "128", "--overlap", "32", "--precision", "f32", "-q"]

    def run(*args):
        res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                             env=env, timeout=300)
        assert res.returncode == 0, res.stderr
        return res.stdout
    run("segment", str(src), "--out", str(tmp_path / "a"), "--prob", "--threshold", "0.3", *common)
    run("segment", str(src), "--out", str(tmp_path / "b"), "--threshold", "0.45", *common)
    assert "3 scans rethresholded at 0.45" in run("rethreshold", str(tmp_path / "a"), "--threshold", "0.45")
    for i in range(3):
        a = cv2.imread(str(tmp_path / "a" / f"s{i}.mask.png"), cv2.IMREAD_UNCHANGED)
        b = cv2.imread(str(tmp_path / "b" / f"s{i}.mask.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(a, b)
        ra = json.loads((tmp_path / "a" / f"s{i}.json").read_text())
        rb = json.loads((tmp_path / "b" / f"s{i}.json").read_text())
        assert ra["spots"] == rb["spots"] and ra["settings"]["threshold"] == 0.45
        assert ra["settings"]["spot_threshold"] == rb["settings"]["spot_threshold"] == 0.58
        assert ra["settings"]["min_area"] == rb["settings"]["min_area"] == 3
        assert ra["settings"]["trim"] == rb["settings"]["trim"] == defaults.TRIM     # re-read the scan
        assert ra["settings"]["neutral"] == rb["settings"]["neutral"] == 40
    # a scan replaced by another size since: that scan is skipped and named, the others redone
    write(src / "s0.png", textured(120, 200, seed=9))
    out = subprocess.run([sys.executable, "-m", "shared.cli", "rethreshold", str(tmp_path / "a"), "--threshold", "0.5"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "2 scans rethresholded at 0.5, 1 skipped" in out.stdout
    assert "s0.json" in out.stderr and "not the scan segmented" in out.stderr
    # the model's settings were in force: weak or tiny spots at 0.45 are gone, confident ones stay
    c = tmp_path / "c"
    run("segment", str(src), "--out", str(c), "--threshold", "0.45", "--spot-threshold", "0", "--min-area", "1",
        *common)
    loose = sum(json.loads((c / f"s{i}.json").read_text())["spot_count"] for i in range(3))
    tuned = sum(json.loads((tmp_path / "b" / f"s{i}.json").read_text())["spot_count"] for i in range(3))
    assert loose > tuned > 0
    # rethreshold applies the colour test as given: without it, more spots
    d = tmp_path / "d"
    run("segment", str(src), "--out", str(d), "--prob", "--threshold", "0.45", *common)
    tested = sum(json.loads((d / f"s{i}.json").read_text())["spot_count"] for i in range(3))
    run("rethreshold", str(d), "--threshold", "0.45", "--neutral", "0")
    untested = sum(json.loads((d / f"s{i}.json").read_text())["spot_count"] for i in range(3))
    assert untested > tested


def test_clean_image_keeps_icc_profile_and_exif(tmp_path, make_session):
    import tifffile
    from PIL import Image, ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    session = make_session("identity", mode="native", tile=128, overlap=32, threshold=0.5, inpaint=True)
    rgb = textured(90, 160, seed=4)
    rgb[40:44, 60:64, 2] = 255                  # a "spot" in channel 0 (BGR) after the RGB->BGR swap
    im = Image.fromarray(rgb)
    exif = im.getexif()
    exif[0x0112] = 6                            # rotate for display
    exif[0x010F] = "ScanCo"                     # Make
    im.save(tmp_path / "a.jpg", quality=95, exif=exif, icc_profile=icc)
    im.save(tmp_path / "b.png", icc_profile=icc)
    tifffile.imwrite(tmp_path / "c.tif", (rgb.astype(np.uint16) * 257), photometric="rgb", iccprofile=icc)
    for name in ("a.jpg", "b.png", "c.tif"):
        process_scan(str(tmp_path / name), str(tmp_path / "out"), name, session)
    a = Image.open(tmp_path / "out" / "a.clean.jpg")
    assert a.info.get("icc_profile") == icc and a.size == (90, 160)          # upright, as displayed
    assert a.getexif().get(0x010F) == "ScanCo" and a.getexif().get(0x0112) == 1
    assert Image.open(tmp_path / "out" / "b.clean.png").info.get("icc_profile") == icc
    with tifffile.TiffFile(tmp_path / "out" / "c.clean.tif") as tif:
        page = tif.pages[0]
        assert page.dtype == np.uint16 and page.shape == (90, 160, 3)
        assert page.tags["InterColorProfile"].value == icc

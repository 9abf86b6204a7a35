"""`dustspot prepare` against hostile and malformed CVAT exports: unsafe scan names, zip and
pixel bombs, labels that would be lost silently, re-runs into the same folder, and malformed
members, each a clean error (exit 1, no traceback) naming the member."""
import json
import os
import resource
import struct
import subprocess
import sys
import zipfile
import zlib

import cv2
import numpy as np
import pytest

from tests.conftest import textured

LABELMAP = "# label:color_rgb:parts:actions\nbackground:0,0,0::\ndust:250,50,83::\n"
DUST = (250, 50, 83)


def png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


def class_mask(height=64, width=96, colour=DUST) -> bytes:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[10:20, 10:20] = colour
    return png(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def make_export(path, names, labelmap=LABELMAP, members=None, listing=None):
    """A real CVAT 'Segmentation mask 1.1' zip: one 96x64 scan and mask per name; `members`
    adds or replaces members; `listing` replaces default.txt (None: the names)."""
    files = {"labelmap.txt": labelmap}
    for i, name in enumerate(names):
        files[f"JPEGImages/{name}.png"] = png(textured(64, 96, seed=i))
        files[f"SegmentationClass/{name}.png"] = class_mask()
    files["ImageSets/Segmentation/default.txt"] = "\n".join(names) + "\n" if listing is None else listing
    files.update(members or {})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in files.items():
            z.writestr(member, data)
    return str(path)


def cli(*args):
    return subprocess.run([sys.executable, "-m", "shared.cli", "prepare", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def fails_cleanly(res, *expected):
    assert res.returncode == 1, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr, res.stderr
    for text in expected:
        assert text in res.stderr, res.stderr


def tiles(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png"))


# --- 1. scan names -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../../../ESCAPED", "sub/../../../../ESCAPED", "ESC\\APED", "ESC\x00APED"])
def test_scan_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    export = make_export(tmp_path / "x.zip", [name])
    out = tmp_path / "w" / "x" / "out"
    res = cli(export, "--out", out, "--working-size", "96", "--tile", "64")
    fails_cleanly(res, "default.txt line 1", "refused")
    assert not [p for p in tmp_path.rglob("*ESC*") if p.suffix == ".png"]     # nothing written anywhere


def test_an_absolute_scan_name_is_refused(tmp_path):
    target = tmp_path / "elsewhere" / "scan"
    export = make_export(tmp_path / "x.zip", [str(target)])
    res = cli(export, "--out", tmp_path / "out", "--working-size", "96", "--tile", "64")
    fails_cleanly(res, "absolute name", str(target))
    assert not (tmp_path / "elsewhere").exists() and not tiles(tmp_path / "out")


def test_scan_names_with_folders_are_flattened_and_counted_truly(tmp_path):
    export = make_export(tmp_path / "x.zip", ["roll1/frame3", "roll2/sub/frame1"])
    out = tmp_path / "out"
    res = cli(export, "--out", out, "--working-size", "96", "--tile", "64", "--valid-every", "1000")
    assert res.returncode == 0, res.stderr
    written = tiles(out)
    assert "train/images/roll1__frame3_00000_00000.png" in written
    assert "train/masks/roll2__sub__frame1_00000_00032.png" in written
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["tiles"]["train"] * 2 == len(written) == 8          # the summary counts real files


def test_names_that_flatten_to_the_same_stem_are_refused(tmp_path):
    export = make_export(tmp_path / "x.zip", ["d/a", "d__a"])
    fails_cleanly(cli(export, "--out", tmp_path / "out"), "'d/a'", "'d__a'")


# --- 2. zip and pixel bombs ------------------------------------------------------------------

def bomb_png(width, height) -> bytes:
    """A real 1-bit gray PNG of width x height, all black: a few hundred KB for 900 MP."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" * (1 + (width + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row * 1000) for _ in range(height // 1000)) + packer.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_a_pixel_bomb_mask_is_refused_from_its_header(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a"], members={"SegmentationClass/a.png": bomb_png(30000, 30000)})
    assert os.path.getsize(export) < 1_000_000
    res = cli(export, "--out", tmp_path / "out")
    fails_cleanly(res, "SegmentationClass/a.png", "pixel limit")
    # decoding it took 8.8 GB; refused from the header, the whole command stays small
    assert resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss < 1_500_000        # KiB


def test_a_mask_of_another_size_than_its_image_is_refused_not_stretched(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a"], members={"SegmentationClass/a.png": class_mask(32, 48)})
    res = cli(export, "--out", tmp_path / "out")
    fails_cleanly(res, "SegmentationClass/a.png", "48x32", "96x64")
    assert not tiles(tmp_path / "out")


def test_an_oversized_text_member_is_refused_before_reading(tmp_path):
    from shared.cvat import MAX_TEXT_BYTES
    labelmap = LABELMAP + ("#" * 1023 + "\n") * (MAX_TEXT_BYTES // 1024 + 1)   # compresses to ~20 KB
    export = make_export(tmp_path / "x.zip", ["a"], labelmap=labelmap)
    fails_cleanly(cli(export, "--out", tmp_path / "out"), "labelmap.txt", "size limit")


# --- 3. labels that would be lost ---------------------------------------------------------------

def test_an_unknown_label_is_an_error_listing_the_known_ones(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a"])
    res = cli(export, "--out", tmp_path / "out", "--label", "Dust")
    fails_cleanly(res, "'Dust'", "'background', 'dust'")
    assert not (tmp_path / "out").exists()
    ok = cli(export, "--out", tmp_path / "out", "--label", "dust", "--working-size", "96", "--tile", "64")
    assert ok.returncode == 0, ok.stderr
    assert json.loads((tmp_path / "out" / "dataset.json").read_text())["dust_pixel_fraction"] > 0


def test_mask_colours_in_no_label_are_refused_or_warned_and_counted_with_lenient(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a", "b"],
                         members={"SegmentationClass/b.png": class_mask(colour=(10, 200, 30))})
    args = ["--working-size", "96", "--tile", "64", "--valid-every", "1000"]
    res = cli(export, "--out", tmp_path / "out", "--lenient", *args)
    assert res.returncode == 0, res.stderr
    assert "warning: SegmentationClass/b.png: 100 pixels" in res.stderr and "(10,200,30) x100" in res.stderr
    assert "SegmentationClass/a.png" not in res.stderr
    meta = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert meta["unknown_colour_pixels"] == {"SegmentationClass/b.png": 100}

    res = cli(export, "--out", tmp_path / "strict", *args)            # the default: strict
    fails_cleanly(res, "SegmentationClass/b.png", "(10,200,30) x100", "refused")
    assert not tiles(tmp_path / "strict")


# --- 4. re-running into the same folder ------------------------------------------------------

def test_a_non_empty_output_is_refused_and_force_replaces_it(tmp_path):
    out = tmp_path / "out"
    first = make_export(tmp_path / "first.zip", ["a", "b", "c", "d", "e", "f"])
    assert cli(first, "--out", out, "--working-size", "96", "--tile", "64", "--valid-every", "2").returncode == 0
    assert {p.split("/")[0] for p in tiles(out)} == {"train", "valid"}
    second = make_export(tmp_path / "second.zip", ["g"])
    res = cli(second, "--out", out, "--working-size", "96", "--tile", "64", "--valid-every", "2")
    fails_cleanly(res, "not empty", "--force")
    assert any("/a_" in p for p in tiles(out))                       # refused: the first output is intact

    res = cli(second, "--out", out, "--working-size", "96", "--tile", "64", "--valid-every", "2", "--force")
    assert res.returncode == 0, res.stderr
    written = tiles(out)
    assert written and all(os.path.basename(p).startswith("g_") for p in written)
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["scans"] == 1 and (meta["tiles"]["train"] + meta["tiles"]["valid"]) * 2 == len(written)

    (out / "notes.txt").write_text("mine")
    fails_cleanly(cli(second, "--out", out, "--force"), "notes.txt")
    assert (out / "notes.txt").read_text() == "mine" and tiles(out) == written


# --- 5. malformed input: messages, not tracebacks --------------------------------------------

TRUNCATED = class_mask()[:60]


@pytest.mark.parametrize("labelmap, members, expected", [
    ("background\ndust:250,50,83::\n", {}, ["labelmap.txt line 1", "name:r,g,b"]),
    ("background:0,0,0::\ndust:250,50::\n", {}, ["labelmap.txt line 2", "three numbers"]),
    ("background:0,0,0::\ndust:300,50,83::\n", {}, ["labelmap.txt line 2", "0-255"]),
    ("background:0,0,0::\nd\xfcst:250,50,83::\n".encode("latin-1"), {}, ["labelmap.txt", "not UTF-8"]),
    (LABELMAP, {"SegmentationClass/a.png": TRUNCATED}, ["SegmentationClass/a.png"]),
    (LABELMAP, {"SegmentationClass/a.png": b"not a png"}, ["SegmentationClass/a.png", "not an image"]),
    (LABELMAP, {"JPEGImages/a.png": b"not an image"}, ["JPEGImages/a.png", "not an image"]),
    (LABELMAP, {"ImageSets/Segmentation/default.txt": "\n"}, ["no scans"]),
], ids=["no-colour", "two-components", "over-255", "latin-1", "truncated-mask", "garbage-mask", "bad-image",
        "empty-export"])
def test_malformed_members_are_clean_errors(tmp_path, labelmap, members, expected):
    export = make_export(tmp_path / "x.zip", ["a"], labelmap=labelmap, members=members)
    fails_cleanly(cli(export, "--out", tmp_path / "out"), *expected)
    assert not tiles(tmp_path / "out")


def test_a_file_that_is_not_a_zip_is_named_as_such(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK but not really a zip")
    fails_cleanly(cli(tmp_path / "x.zip", "--out", tmp_path / "out"), "not a readable zip")


def test_every_bad_scan_is_listed_and_nothing_is_left_behind(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a", "b", "c"],
                         members={"JPEGImages/a.png": b"garbage", "SegmentationClass/c.png": TRUNCATED})
    res = cli(export, "--out", tmp_path / "out", "--working-size", "96", "--tile", "64")
    fails_cleanly(res, "2 of 3 scans", "JPEGImages/a.png", "SegmentationClass/c.png")
    assert not tiles(tmp_path / "out") and not (tmp_path / "out" / "dataset.json").exists()


def test_an_unpacked_folder_gets_the_same_checks(tmp_path):
    export = make_export(tmp_path / "x.zip", ["a"], listing="a\n../ESCAPED\n")
    folder = tmp_path / "unpacked"
    zipfile.ZipFile(export).extractall(folder)
    fails_cleanly(cli(folder, "--out", tmp_path / "out"), "default.txt line 2", "'../ESCAPED'")

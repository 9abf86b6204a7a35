"""The labelling loop: select -> export-cvat -> a labeller edits the masks -> prepare -> tiles."""
import json
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np

from shared.cvat import Export, parse_labelmap
from tests.conftest import textured


def run(args, env):
    res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_round_trip_through_a_cvat_export(tmp_path, registry_root):
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    src, out = tmp_path / "scans", tmp_path / "out"
    src.mkdir()
    for i, spots in enumerate([3, 1, 2]):
        img = (textured(256, 384, seed=i) // 2)             # channel 0 < 128: no dust by itself
        for k in range(spots):
            cv2.circle(img, (60 + 100 * k, 80), 6, (255, 255, 255), -1)   # "dust" the identity model sees
        cv2.imwrite(str(src / f"roll{i}.png"), img)
    run(["segment", str(src), "--out", str(out), "--model", "identity", "--native", "--tile", "128",
         "--overlap", "32", "--threshold", "0.5", "--precision", "f32", "-q"], env)

    ranking = run(["select", str(out), "--top", "3"], env).splitlines()
    assert [line.split("\t")[0] for line in ranking] == ["roll0.png", "roll2.png", "roll1.png"]

    export_zip = tmp_path / "pre.zip"
    run(["export-cvat", str(out), "--to", str(export_zip)], env)
    names = zipfile.ZipFile(export_zip).namelist()
    assert {"labelmap.txt", "ImageSets/Segmentation/default.txt", "SegmentationClass/roll0.png",
            "SegmentationObject/roll0.png", "JPEGImages/roll0.png"} <= set(names)
    pre = Export(str(export_zip))
    assert np.count_nonzero(pre.dust_mask("roll0")) == np.count_nonzero(
        cv2.imread(str(out / "roll0.mask.png"), cv2.IMREAD_GRAYSCALE))

    # The labeller: unpacks, renames the label colour (CVAT lets users pick colours), adds a
    # hair the model missed and deletes a false detection.
    edited = tmp_path / "edited"
    zipfile.ZipFile(export_zip).extractall(edited)
    colours = parse_labelmap((edited / "labelmap.txt").read_text())
    old = colours["dust"]
    new = (10, 200, 30)
    (edited / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                                         f"dust:{new[0]},{new[1]},{new[2]}::\n")
    for other in ("roll1.png", "roll2.png"):                     # the new colour, in every mask
        mask = cv2.imread(str(edited / "SegmentationClass" / other))
        mask[np.all(mask == old[::-1], axis=2)] = new[::-1]
        cv2.imwrite(str(edited / "SegmentationClass" / other), mask)
    cls = cv2.cvtColor(cv2.imread(str(edited / "SegmentationClass" / "roll0.png")), cv2.COLOR_BGR2RGB)
    cls[np.all(cls == old, axis=2)] = new
    cv2.line(cls, (20, 200), (200, 210), new, 2)               # the added hair
    cv2.circle(cls, (260, 80), 9, (0, 0, 0), -1)                # the third "spot" was not dust
    cv2.imwrite(str(edited / "SegmentationClass" / "roll0.png"), cv2.cvtColor(cls, cv2.COLOR_RGB2BGR))

    dataset = tmp_path / "dataset"
    run(["prepare", str(edited), "--out", str(dataset), "--working-size", "192", "--tile", "64",
         "--valid-every", "1000"], env)
    meta = json.loads((dataset / "dataset.json").read_text())
    assert meta["labels"]["dust"] == list(new) and meta["scans"] == 3
    # Reassemble roll0's tiles (working size 192 = half the 384 px width: masks scaled NN).
    tiles = sorted((dataset / "train" / "masks").glob("roll0_*.png"))
    assert tiles
    full = np.zeros((128, 192), np.uint8)
    for t in tiles:
        _, y, x = t.stem.split("_")
        m = cv2.imread(str(t), cv2.IMREAD_UNCHANGED)
        assert set(np.unique(m)) <= {0, 255}                    # nearest neighbour: no blurred labels
        full[int(y):int(y) + m.shape[0], int(x):int(x) + m.shape[1]] = m
    assert full[100:106, 10:100].any()                          # the hair is in the training tiles
    assert not full[34:46, 124:136].any()                       # the deleted spot is gone
    assert full[34:46, 24:36].any()                             # a kept spot is still there
    image_tile = cv2.imread(str(sorted((dataset / "train" / "images").glob("roll0_*.png"))[0]), cv2.IMREAD_UNCHANGED)
    assert image_tile.shape == (64, 64, 3)


def test_prepare_keeps_16_bit_scans(tmp_path):
    from shared.cvat import write_export
    img = textured(100, 120, dtype=np.uint16)
    ok, buf = cv2.imencode(".tif", img)
    mask = np.zeros((100, 120), np.uint8)
    mask[40:50, 40:50] = 255
    write_export([("deep", buf.tobytes(), ".tif", mask)], str(tmp_path / "x.zip"))
    from trainer.prepare import prepare
    prepare(str(tmp_path / "x.zip"), str(tmp_path / "ds"), working_size=120, tile=64, valid_every=1000, echo=lambda *_: None)
    tile = cv2.imread(str(sorted((tmp_path / "ds" / "train" / "images").glob("*.png"))[0]), cv2.IMREAD_UNCHANGED)
    assert tile.dtype == np.uint16

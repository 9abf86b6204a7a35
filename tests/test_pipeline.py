"""The pipeline end to end on real files: outputs, sizes, report contents."""
import json
import os

import cv2
import numpy as np
import pytest

from shared import storage
from shared.errors import ImageError, StorageError
from shared.pipeline import SegmentOptions, process_scan, to_working, working_shape
from tests.conftest import textured
from tests.scans import write, write_truncated_jpeg, write_with_orientation
from tests.services import free_port, s3_endpoint  # noqa: F401 (fixture)


@pytest.fixture
def session(make_session):
    return make_session("conv", tile=128, overlap=32, margin=8, working_size=256)


def read_mask(path):
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8 and mask.ndim == 2
    assert set(np.unique(mask)) <= {0, 255}
    return mask


@pytest.mark.parametrize("kind", ["exif6", "tiff16", "gray", "rgba", "gray16"])
def test_mask_has_the_displayed_size(tmp_path, session, kind):
    src = tmp_path / "in"
    src.mkdir()
    if kind == "exif6":
        path = write_with_orientation(src / "scan.jpg", textured(90, 160)[:, :, ::-1].copy(), 6)
        displayed = (160, 90)
    elif kind == "tiff16":
        path, displayed = write(src / "scan.tif", textured(90, 160, dtype=np.uint16)), (90, 160)
    elif kind == "gray":
        path, displayed = write(src / "scan.png", textured(90, 160, channels=1)), (90, 160)
    elif kind == "gray16":
        path, displayed = write(src / "scan.png", textured(90, 160, channels=1, dtype=np.uint16)), (90, 160)
    else:
        rgba = np.dstack([textured(90, 160), np.full((90, 160), 100, np.uint8)])
        path, displayed = write(src / "scan.png", rgba), (90, 160)
    report = process_scan(path, str(tmp_path / "out"), os.path.basename(path), session)
    mask = read_mask(tmp_path / "out" / "scan.mask.png")
    assert mask.shape == displayed
    assert report["size"] == {"width": displayed[1], "height": displayed[0]}
    on_disk = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert on_disk["status"] == "ok" and on_disk["spot_count"] == len(on_disk["spots"])


def test_report_and_optional_outputs(tmp_path, make_session):
    session = make_session("identity", mode="native", tile=128, overlap=32, threshold=0.5,
                           overlay=True, prob=True)
    image = np.zeros((200, 300, 3), np.uint8)
    image[20:30, 40:55] = 255            # two "spots" the identity model reports
    image[150:152, 200:260] = 255
    path = write(tmp_path / "two.png", image)
    report = process_scan(path, str(tmp_path / "out"), "nested/two.png", session)
    out = tmp_path / "out" / "nested"
    assert sorted(os.listdir(out)) == ["two.json", "two.mask.png", "two.overlay.jpg", "two.prob.png"]
    assert report["spot_count"] == 2
    assert sorted(s["bbox"] for s in report["spots"]) == [[40, 20, 15, 10], [200, 150, 60, 2]]
    assert report["model"]["name"] == "identity" and len(report["model"]["sha256"]) == 64
    assert {"decode", "resize", "infer", "upsample", "threshold", "spots", "encode", "write", "total"} <= set(report["timings"])
    assert report["settings"]["tile"] == 128 and report["settings"]["working_shape"] == [200, 300]
    prob = cv2.imread(str(out / "two.prob.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(prob, image[:, :, 0])
    assert cv2.imread(str(out / "two.overlay.jpg")) is not None


@pytest.mark.parametrize("shape, target, filter_", [
    ((300, 200, 3), (100, 100), cv2.INTER_LINEAR),   # 3x and 2x: bilinear sampling
    ((300, 200), (140, 120), cv2.INTER_AREA),        # 2.1x and 1.7x: a mild shrink on one side
    ((300, 200, 3), (250, 180), cv2.INTER_AREA),
    ((300, 200, 3), (600, 250), cv2.INTER_LINEAR),   # growing
])
def test_working_image_filter_follows_the_shrink(shape, target, filter_):
    image = textured(*shape[:2], channels=shape[2] if len(shape) == 3 else 1, dtype=np.uint16)
    working = to_working(image.reshape(shape), *target)
    np.testing.assert_array_equal(working, cv2.resize(image, target[::-1], interpolation=filter_))
    assert to_working(image, *shape[:2]) is image


def test_small_dust_keeps_its_contrast_in_a_3x_shrink():
    """One dark 3x3 speck on a flat field, shrunk 3x: sampled, not averaged into its surround."""
    image = np.full((300, 300), 200, np.uint8)
    image[149:152, 149:152] = 20
    working = to_working(image, 100, 100)
    assert working.min() <= 60         # the area average of its 3x3 box, misaligned by 1 px, is ~120


def test_upsampled_probabilities_give_smooth_edges(tmp_path, make_session):
    """Working at 1/4 scale: the native mask of a disc is round, not made of 4x4 blocks."""
    session = make_session("identity", mode="size", working_size=100, tile=64, overlap=16, threshold=0.5)
    image = np.zeros((400, 400, 3), np.uint8)
    cv2.circle(image, (200, 200), 80, (255, 255, 255), -1)
    path = write(tmp_path / "disc.png", image)
    process_scan(path, str(tmp_path / "out"), "disc.png", session)
    mask = read_mask(tmp_path / "out" / "disc.mask.png")
    truth = image[:, :, 0]
    assert mask.shape == (400, 400)
    assert np.mean(mask != truth) < 0.005        # blocky 4x4 upsampling would miss far more
    rows = [np.flatnonzero(mask[y]) for y in range(125, 276, 10)]
    widths = [r[-1] - r[0] for r in rows if len(r)]
    assert len(set(w % 4 for w in widths)) > 1    # edges are not quantised to the working grid


def test_failed_scan_writes_a_failed_report_and_raises(tmp_path, session):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageError):
        process_scan(str(bad), str(tmp_path / "out"), "bad.jpg", session)
    report = json.loads((tmp_path / "out" / "bad.json").read_text())
    assert report["status"] == "failed" and "bad.jpg" in report["errors"][0]
    assert not (tmp_path / "out" / "bad.mask.png").exists()


def test_hostile_relative_name_is_refused(tmp_path, session):
    from shared.errors import PathError
    path = write(tmp_path / "ok.png", textured(40, 40))
    with pytest.raises(PathError):
        process_scan(path, str(tmp_path / "out"), "../escape.png", session)
    assert not (tmp_path / "escape.mask.png").exists()


@pytest.mark.parametrize("mode,size,expected", [("size", 2016, (1344, 2016)), ("square", 2016, (2016, 2016)),
                                                ("native", None, (3000, 4500))])
def test_working_shape_modes(mode, size, expected):
    assert working_shape(3000, 4500, SegmentOptions(mode=mode, working_size=size)) == expected


def test_atomic_write_leaves_no_partial_files(tmp_path):
    from shared.storage import LocalStorage
    store = LocalStorage(str(tmp_path))
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / ".b.mask.png.x1y2z3.part").write_bytes(b"half a mask from a killed writer")
    store.write("a/b.mask.png", b"whole")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.mask.png"]
    assert (tmp_path / "a" / "b.mask.png").read_bytes() == b"whole"


# --- reruns into the same output root: the outputs beside a report are exactly its own ------

def listing(folder):
    return sorted(os.listdir(folder))


def test_failed_rerun_leaves_no_outputs_of_the_earlier_run(tmp_path, make_session):
    """Input and output folder are one: the failed report stays, no old mask beside it, and
    the input itself is never deleted."""
    folder = tmp_path / "scans"
    folder.mkdir()
    full = make_session("conv", tile=128, overlap=32, working_size=256, overlay=True, prob=True)
    path = write(folder / "scan.jpg", textured(120, 160))
    process_scan(path, str(folder), "scan.jpg", full)
    assert listing(folder) == ["scan.jpg", "scan.json", "scan.mask.png", "scan.overlay.jpg", "scan.prob.png"]
    write_truncated_jpeg(folder / "scan.jpg", textured(120, 160))
    with pytest.raises(ImageError):
        process_scan(path, str(folder), "scan.jpg", full)
    assert listing(folder) == ["scan.jpg", "scan.json"]
    report = json.loads((folder / "scan.json").read_text())
    assert report["status"] == "failed" and "outputs" not in report


def test_failed_write_removes_what_the_run_had_written(tmp_path, make_session):
    """The mask and probability map are written, then the overlay cannot be: none stays."""
    full = make_session("conv", tile=128, overlap=32, working_size=256, overlay=True, prob=True)
    path = write(tmp_path / "scan.png", textured(120, 160))
    out = tmp_path / "out"
    (out / "scan.overlay.jpg").mkdir(parents=True)            # a folder where the overlay goes
    with pytest.raises(StorageError, match="scan.overlay.jpg"):
        process_scan(path, str(out), "scan.png", full)
    assert listing(out) == ["scan.json", "scan.overlay.jpg"]
    assert json.loads((out / "scan.json").read_text())["status"] == "failed"


def test_rerun_with_fewer_options_removes_the_outputs_it_does_not_write(tmp_path, make_session):
    full = make_session("conv", tile=128, overlap=32, working_size=256, overlay=True, prob=True,
                        inpaint=True)
    plain = make_session("conv", tile=128, overlap=32, working_size=256)
    path = write(tmp_path / "scan.png", textured(120, 160))
    out = tmp_path / "out" / "sub"
    first = process_scan(path, str(tmp_path / "out"), "sub/scan.png", full)
    assert listing(out) == ["scan.clean.png", "scan.json", "scan.mask.png", "scan.overlay.jpg",
                            "scan.prob.png"]
    assert sorted(first["outputs"].values()) == [f"sub/{n}" for n in listing(out) if n != "scan.json"]
    report = process_scan(path, str(tmp_path / "out"), "sub/scan.png", plain)
    assert listing(out) == ["scan.json", "scan.mask.png"]
    assert report["outputs"] == {"mask": "sub/scan.mask.png"}
    assert json.loads((out / "scan.json").read_text())["outputs"] == {"mask": "sub/scan.mask.png"}
    read_mask(out / "scan.mask.png")


@pytest.mark.parametrize("fails", [False, True])
def test_an_earlier_report_cannot_have_other_files_deleted(tmp_path, session, fails):
    """Only the stem's own output names in an earlier report are deleted: never a file outside
    the root, another scan's outputs, the report, the input, or a name merely starting alike."""
    out = tmp_path / "out"
    out.mkdir()
    path = write(out / "scan.png", textured(120, 160))
    others = ["other.mask.png", "scan.x.mask.png", "scanner.mask.png", "scan.mask.png.bak",
              "scan.MASK.PNG", "scan.png"]
    for name in others[:-1]:
        (out / name).write_bytes(b"not this run's")
    (tmp_path / "victim.txt").write_bytes(b"outside the root")
    (out / "scan.overlay.jpg").write_bytes(b"the earlier run's overlay")
    hostile = {"mask": "../victim.txt", "abs": str(tmp_path / "victim.txt"), "self": "scan.json",
               "climb": "scan.mask.png/../../victim.txt", "number": 5, "list": ["scan.prob.png"],
               "overlay": "scan.overlay.jpg", **{f"o{i}": name for i, name in enumerate(others)}}
    (out / "scan.json").write_text(json.dumps({"status": "ok", "outputs": hostile}))
    if fails:
        (out / "scan.mask.png").mkdir()                       # this run's mask cannot be written
        with pytest.raises(StorageError):
            process_scan(path, str(out), "scan.png", session)
    else:
        process_scan(path, str(out), "scan.png", session)
    assert not (out / "scan.overlay.jpg").exists()            # the one real earlier output
    assert (tmp_path / "victim.txt").read_bytes() == b"outside the root"
    assert set(others) <= set(listing(out)) and (out / "scan.json").exists()
    assert json.loads((out / "scan.json").read_text())["status"] == ("failed" if fails else "ok")


@pytest.mark.parametrize("earlier", [b"not json", b"[1, 2]", b'{"outputs": ["scan.mask.png"]}',
                                     b"[" * 100_000, b"\xff\xfe"])
def test_an_unreadable_earlier_report_is_replaced(tmp_path, session, earlier):
    path = write(tmp_path / "scan.png", textured(120, 160))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scan.json").write_bytes(earlier)
    report = process_scan(path, str(tmp_path / "out"), "scan.png", session)
    assert report["status"] == "ok" and listing(tmp_path / "out") == ["scan.json", "scan.mask.png"]


@pytest.fixture
def bucket(s3_endpoint, monkeypatch):  # noqa: F811 (fixture)
    import boto3
    monkeypatch.setattr(storage, "_S3_CLIENTS", {})
    name = f"rerun-{free_port()}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name


def test_rerun_into_s3_removes_earlier_outputs(tmp_path, make_session, bucket):
    import boto3
    full = make_session("conv", tile=128, overlap=32, working_size=256, overlay=True, prob=True)
    plain = make_session("conv", tile=128, overlap=32, working_size=256)
    path = write(tmp_path / "scan.jpg", textured(120, 160))
    root = f"s3://{bucket}/out"

    def keys():
        return sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []))

    process_scan(path, root, "a/scan.jpg", full)
    assert keys() == ["out/a/scan.json", "out/a/scan.mask.png", "out/a/scan.overlay.jpg", "out/a/scan.prob.png"]
    process_scan(path, root, "a/scan.jpg", plain)
    assert keys() == ["out/a/scan.json", "out/a/scan.mask.png"]
    write_truncated_jpeg(tmp_path / "scan.jpg", textured(120, 160))
    with pytest.raises(ImageError):
        process_scan(path, root, "a/scan.jpg", plain)
    assert keys() == ["out/a/scan.json"]
    assert json.loads(storage.read_uri(root + "/a/scan.json"))["status"] == "failed"

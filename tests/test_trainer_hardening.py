"""Wrong inputs to `dustspot evaluate`, `train` and `export --int8` fail early, by name and
without a traceback, and leave nothing half done: real files, a real tiny training run."""
import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from shared.metrics import DustScore
from tests.conftest import textured
from tests.test_metrics import dotted_scan

TINY = ["--size", "64", "--batch", "2", "--pool", "8", "--valid-pool", "4", "--threads", "1", "--workers", "1",
        "--decoder-channels", "16,8,8,8,8", "--eval-minutes", "100"]


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "shared.cli", *map(str, args)], capture_output=True, text=True,
                          check=False, timeout=600, env=env or os.environ)


def clean_error(res, *parts):
    """A refusal: non-zero, one message naming each of `parts`, no traceback."""
    assert res.returncode != 0, res.stdout[-2000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    for part in parts:
        assert str(part) in res.stderr, (part, res.stderr[-3000:])


# --- dustspot evaluate --------------------------------------------------------------------------

def test_metrics_refuse_truth_that_is_not_0_128_255_and_are_none_without_dusty_images():
    from shared.metrics import truth_problem
    assert truth_problem(np.array([[0, 128, 255]], np.uint8)) is None
    assert "a 0/1 mask" in truth_problem(np.array([[0, 1]], np.uint8))
    assert "channels" in truth_problem(np.zeros((4, 4, 3), np.uint8))
    assert "does not decode" in truth_problem(None)
    with pytest.raises(ValueError, match="0, 128 and 255"):
        DustScore().add(np.array([[0, 1]], np.uint8), np.zeros((1, 2), np.uint8))
    score = DustScore()
    score.add(np.zeros((100, 100), np.uint8), np.zeros((100, 100), np.uint8))      # a clean image only
    r = score.result()
    assert r["clean_fp_per_mp"] == 0.0
    assert all(r[k] is None for k in ("pixel_precision", "pixel_recall", "pixel_dice", "object_recall",
                                      "object_precision"))


def test_evaluate_names_each_unusable_ground_truth_scores_the_rest_and_fails(tmp_path, registry_root):
    images, truth = tmp_path / "images", tmp_path / "gt"
    images.mkdir(), truth.mkdir()
    scan, gt = dotted_scan()
    for name in ("good", "small", "garbage", "binary", "colour"):
        cv2.imwrite(str(images / f"{name}.png"), scan)
    cv2.imwrite(str(truth / "good.png"), gt)
    cv2.imwrite(str(truth / "small.png"), gt[:100, :150])                      # another size
    (truth / "garbage.png").write_bytes(b"not a png at all")
    cv2.imwrite(str(truth / "binary.png"), (gt > 0).astype(np.uint8))         # a 0/1 mask
    colour = np.zeros((200, 300, 3), np.uint8)
    colour[gt > 0] = (36, 179, 83)                                             # a CVAT class colour
    cv2.imwrite(str(truth / "colour.png"), colour)
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    res = cli("evaluate", images, truth, "--json", "--model", "identity", "--native", "--tile", "128",
              "--threshold", "0.5", "--precision", "f32", env=env)
    assert res.returncode == 1 and "Traceback" not in res.stderr, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r["scored"] == 1 and r["gt_objects"] == 3 and r["object_recall"] == 1.0 and r["pixel_dice"] == 1.0
    problems = {p.split(":")[0]: p for p in r["problems"]}
    assert set(problems) == {"small.png", "garbage.png", "binary.png", "colour.png"}
    assert str(truth / "small.png") in problems["small.png"] and "150x100" in problems["small.png"]
    assert "does not decode" in problems["garbage.png"] and str(truth / "garbage.png") in problems["garbage.png"]
    assert "0/1 mask" in problems["binary.png"]
    assert "channels" in problems["colour.png"]
    assert all(f"problem: {p}" in res.stderr for p in r["problems"])


def test_evaluate_with_nothing_scored_fails_and_reports_no_metrics(tmp_path, registry_root):
    images, truth = tmp_path / "images", tmp_path / "gt"
    images.mkdir(), truth.mkdir()
    cv2.imwrite(str(images / "a.png"), np.zeros((64, 64, 3), np.uint8))        # no gt/a.png
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    res = cli("evaluate", images, truth, "--json", "--model", "identity", "--native", "--tile", "128",
              "--precision", "f32", env=env)
    assert res.returncode == 1, res.stderr[-3000:]
    r = json.loads(res.stdout)
    assert r["scored"] == 0 and r["pixel_dice"] is None and r["object_recall"] is None
    assert any(p.startswith("nothing scored") for p in r["problems"])


# --- dustspot train -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def backgrounds(tmp_path_factory):
    folder = tmp_path_factory.mktemp("backgrounds")
    for i in range(3):
        cv2.imwrite(str(folder / f"photo{i}.jpg"), textured(200, 300, seed=i))
    return folder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, backgrounds):
    """A finished one-step run (pool of 8 tiles); tests that change it work on a copy."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    res = cli("train", backgrounds, "--run", run_dir, "--steps", "1", *TINY)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir


def test_train_refuses_bad_flags_and_files_before_building_pools(tmp_path, backgrounds):
    import torch

    from trainer import model as models
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    clean_error(cli("train", backgrounds, "--run", a_file, "--steps", "1", *TINY), a_file, "not a folder")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02this is no torch file")
    run_dir = tmp_path / "run-garbage"
    clean_error(cli("train", backgrounds, "--run", run_dir, "--steps", "1", *TINY, "--init", garbage),
                f"--init {garbage}", "cannot be read")
    assert not os.path.exists(run_dir / "config.json") and not os.path.exists(run_dir / "pool-train")

    spec = {"arch": "unet", "encoder": "efficientnet-b1", "decoder_channels": [16, 8, 8, 8, 8]}
    unet = tmp_path / "unet.pt"
    torch.save({"model": models.build(spec).state_dict(), "config": {"spec": spec}}, unet)
    run_dir = tmp_path / "run-arch"
    clean_error(cli("train", backgrounds, "--run", run_dir, "--steps", "1", *TINY, "--arch", "unetplusplus",
                    "--init", unet), f"--init {unet}", "unetplusplus")
    assert not os.path.exists(run_dir / "config.json") and not os.path.exists(run_dir / "pool-train")

    run_dir = tmp_path / "run-batch"
    clean_error(cli("train", backgrounds, "--run", run_dir, "--steps", "1", *TINY, "--batch", "9"),
                "--batch 9", "--pool 8")
    assert not os.path.exists(run_dir / "config.json") and not os.path.exists(run_dir / "pool-train")


def test_train_again_refuses_a_used_run_resume_warns_and_minutes_extend(tmp_path, backgrounds, tiny_run):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    model_before = (run_dir / "model.pt").read_bytes()
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    clean_error(cli("train", backgrounds, "--run", run_dir, "--steps", "1", *TINY), "already used", "--resume")
    assert (run_dir / "model.pt").read_bytes() == model_before
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before

    # a run limited by --steps 1, extended by --minutes alone; flags that differ are named, not applied
    res = cli("train", backgrounds, "--run", run_dir, "--resume", "--minutes", "0.03", *TINY, "--batch", "4",
              "--lr", "0.01", "--busy-share", "0.9")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "--busy-share 0.9 is ignored; in force: --busy-share 0.25" in res.stderr   # the pool stays
    assert "--batch 4 is ignored; in force: --batch 2" in res.stderr
    assert "--lr 0.01 is ignored; in force: --lr 0.002" in res.stderr
    assert "--size" not in res.stderr                                  # given, and the same as the run's
    assert "--steps 1 no longer limits it" in res.stdout
    final = json.loads((run_dir / "final.json").read_text())
    assert final["step"] > 1 and final["tiles_seen"] == 2 * final["step"]      # batch 2 still

    (run_dir / "checkpoint.pt").write_bytes((run_dir / "checkpoint.pt").read_bytes()[:2000])   # truncated
    clean_error(cli("train", backgrounds, "--run", run_dir, "--resume", "--steps", "50", *TINY),
                run_dir / "checkpoint.pt", "cannot be read")


# --- dustspot export --int8 ---------------------------------------------------------------------

def test_int8_prerequisites_are_checked_before_fp16_is_published(tmp_path, tiny_run):
    registry = tmp_path / "registry"
    # 8 tiles in the run's pool: INT8 calibrates on 300; refused, nothing published
    res = cli("export", tiny_run, "--registry", registry, "--name", "tiny", "--version", "0.0.1", "--int8")
    clean_error(res, "300 tiles", f"{tiny_run / 'pool-train'} holds only 8", "nothing published")
    assert not (registry / "tiny" / "0.0.1").exists()

    # enough calibration tiles, but no validation pool to judge INT8 on (and no --frames)
    pool = tmp_path / "calibration"
    pool.mkdir()
    rng = np.random.default_rng(0)
    np.save(pool / "images.npy", rng.integers(0, 256, (300, 64, 64, 3), dtype=np.uint8))
    np.save(pool / "masks.npy", np.zeros((300, 64, 64), np.uint8))
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)
    shutil.rmtree(run_dir / "pool-valid")
    res = cli("export", run_dir, "--registry", registry, "--name", "tiny", "--version", "0.0.1", "--int8",
              "--calibration-pool", pool)
    clean_error(res, str(run_dir / "pool-valid"))
    assert not (registry / "tiny" / "0.0.1").exists()
    # so the same version can be published once the cause is dealt with
    res = cli("export", run_dir, "--registry", registry, "--name", "tiny", "--version", "0.0.1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert (registry / "tiny" / "0.0.1" / "manifest.json").exists()

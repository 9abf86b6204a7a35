"""Scoring: hand-made cases with known answers, and `dustspot evaluate` end to end."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from shared.metrics import DustScore


def test_objects_pixels_and_dont_care():
    truth = np.zeros((100, 100), np.uint8)
    truth[10:14, 10:14] = 255          # small speck, found
    truth[50:70, 50:52] = 255          # hair (extent 20), missed
    truth[80:85, 80:85] = 128          # too faint to see: don't care
    pred = np.zeros_like(truth)
    pred[11:13, 11:16] = 255           # touches the speck (6 px on it, 4 off it)
    pred[81:83, 81:83] = 255           # only on don't-care: excused
    pred[30:32, 30:32] = 255           # a false spot
    score = DustScore()
    score.add(truth, pred)
    r = score.result()
    assert r["gt_objects"] == 2 and r["object_recall"] == 0.5
    assert r["object_recall_by_extent"] == {"0-8": 1.0, "8-16": None, "16-32": 0.0, "32-inf": None}
    assert r["pred_objects"] == 2 and r["object_precision"] == 0.5
    tp, fp, fn = 6, 4 + 4, 16 - 6 + 40     # the don't-care pixels count neither way
    assert r["pixel_precision"] == pytest.approx(tp / (tp + fp))
    assert r["pixel_dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert r["clean_fp_per_mp"] is None


def test_clean_image_counts_false_spots_per_megapixel():
    score = DustScore()
    pred = np.zeros((1000, 2000), np.uint8)
    pred[5, 5] = pred[500, 500] = pred[900, 1900] = 1
    score.add(np.zeros_like(pred), pred)
    assert score.result()["clean_fp_per_mp"] == pytest.approx(1.5)


def dotted_scan():
    """A black 300x200 scan with three white dots, and its ground truth (the dots, 255)."""
    scan = np.zeros((200, 300, 3), np.uint8)
    gt = np.zeros((200, 300), np.uint8)
    for y, x in [(20, 30), (100, 200), (150, 40)]:
        cv2.circle(scan, (x, y), 4, (255, 255, 255), -1)
        cv2.circle(gt, (x, y), 4, 255, -1)
    return scan, gt


def test_evaluate_command_scores_a_perfect_model(tmp_path, registry_root):
    """The identity model 'predicts' exactly the bright pixels we drew as dust."""
    images, truth = tmp_path / "images", tmp_path / "gt"
    images.mkdir(), truth.mkdir()
    scan, gt = dotted_scan()
    cv2.imwrite(str(images / "a.png"), scan)
    cv2.imwrite(str(truth / "a.png"), gt)
    cv2.imwrite(str(images / "clean.png"), np.zeros((100, 100, 3), np.uint8))
    cv2.imwrite(str(truth / "clean.png"), np.zeros((100, 100), np.uint8))
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    res = subprocess.run([sys.executable, "-m", "shared.cli", "evaluate", str(images), str(truth), "--json",
                          "--model", "identity", "--native", "--tile", "128", "--threshold", "0.5",
                          "--precision", "f32"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)
    assert r["object_recall"] == 1.0 and r["object_precision"] == 1.0 and r["pixel_dice"] == 1.0
    assert r["gt_objects"] == 3 and r["clean_fp_per_mp"] == 0.0 and r["problems"] == []

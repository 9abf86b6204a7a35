"""Post-processing chosen on held-out frames: hysteresis (spot threshold) and minimum area."""
import cv2
import numpy as np

from shared.spots import find_spots, threshold_mask
from trainer import tune


def test_spot_threshold_keeps_only_components_with_a_confident_pixel():
    prob8 = np.zeros((40, 60), np.uint8)
    prob8[5:10, 5:10] = 140            # weak everywhere: dropped at spot threshold 0.7
    prob8[20:30, 20:30] = 140
    prob8[24, 24] = 230                # one confident pixel: kept, with its whole extent
    prob8[30:32, 50:52] = 230          # confident but 4 px: dropped at min area 5
    mask = threshold_mask(prob8, 0.5)
    spots, kept = find_spots(mask.copy(), prob8, min_area=5, min_peak=0.7)
    assert [s["bbox"] for s in spots] == [[20, 20, 10, 10]] and spots[0]["score"] == round(230 / 255, 3)
    assert kept[20:30, 20:30].all() and kept.sum() == 100 * 255
    spots, kept = find_spots(mask.copy(), prob8)
    assert len(spots) == 3 and np.array_equal(kept, mask)


def test_spots_found_in_crops_equal_spots_found_on_the_whole_mask(monkeypatch):
    """find_spots labels crops around the spots when that is cheaper: the same spots and the same
    mask as labelling everything, including spots on the image edge, spots that share a crop,
    a hair longer than any cell, and the faint spots hysteresis drops."""
    from shared import spots as spots_module
    rng = np.random.default_rng(3)
    prob8 = cv2.GaussianBlur(rng.random((301, 457)).astype(np.float32), (0, 0), 1.5)
    prob8 = cv2.normalize(prob8, None, 0, 165, cv2.NORM_MINMAX).astype(np.uint8)   # faint texture
    cv2.line(prob8, (100, 250), (300, 120), 240, 2)                # one long component
    for k in range(8):                                             # confident specks, two side by side
        cv2.circle(prob8, (30 + 50 * k, 60 + 9 * (k % 3)), 2 + k % 3, 230, -1)
    cv2.circle(prob8, (37, 60), 2, 230, -1)
    prob8[0:3, 100:104] = 250                                      # on the top edge
    prob8[297:301, 453:457] = 150                                  # faint (in the mask, no peak), in the corner
    mask = threshold_mask(prob8, 0.5)
    results = {}
    for path, crop_cost in (("whole", 1e9), ("crops", 0.0)):
        monkeypatch.setattr(spots_module, "CROP_S", crop_cost)
        assert (spots_module._crops_around_spots(mask) is None) == (path == "whole")
        results[path] = find_spots(mask.copy(), prob8, min_area=3, min_peak=0.7)
    (whole, whole_mask), (crops, crops_mask) = results["whole"], results["crops"]
    assert len(whole) > 5 and whole == crops and np.array_equal(whole_mask, crops_mask)
    assert any(s["bbox"][1] == 0 for s in whole) and any(s["bbox"][2] > 150 for s in whole)
    assert mask[297:, 453:].all() and not whole_mask[297:, 453:].any()
    # any non-zero pixel is foreground, as in the whole-mask labelling
    faint = np.zeros((40, 40), np.uint8)
    faint[5, 5], faint[20:23, 20:23] = 1, 7
    monkeypatch.setattr(spots_module, "CROP_S", 0.0)
    assert spots_module._crops_around_spots(faint) is not None
    assert len(find_spots(faint, np.full((40, 40), 255, np.uint8))[0]) == 2


def test_tuning_picks_settings_that_drop_faint_false_spots(tmp_path, registry_root):
    """Identity model (probability = blue channel): dust is bright, false spots are dimmer."""
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    rng = np.random.default_rng(0)
    for name, dusty in (("a", True), ("b", True), ("clean", False)):
        img = np.full((300, 400, 3), 20, np.uint8)
        truth = np.zeros((300, 400), np.uint8)
        for _ in range(6):
            y, x = int(rng.integers(20, 280)), int(rng.integers(20, 380))
            cv2.circle(img, (x, y), 4, (150, 150, 150), -1)          # false spot: p ~ 0.59
            if dusty:
                y, x = int(rng.integers(20, 280)), int(rng.integers(20, 380))
                cv2.circle(img, (x, y), 5, (235, 235, 235), -1)      # dust: p ~ 0.92
                cv2.circle(truth, (x, y), 5, 255, -1)
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), img)
        cv2.imwrite(str(tmp_path / "gt" / f"{name}.png"), truth)
    frames = tune.frame_probabilities("identity", str(tmp_path), registry_root)
    assert [frame.name for frame in frames] == ["a", "b", "clean"]
    result = tune.tune(frames)
    best = result["best"]
    assert best["object_recall"] == 1.0 and best["object_precision"] == 1.0
    assert best["clean_fp_per_mp"] == 0 and result["clean_bound_met"]
    assert max(best["threshold"], best["spot_threshold"]) > 150 / 255
    # and a setting that keeps the false spots is scored as such
    loose = tune.score(frames, 0.3)
    assert loose["object_precision"] < 0.6 and loose["clean_fp_per_mp"] > 2


def test_tuning_trims_once_per_threshold_exactly_as_the_pipeline_trims_each_setting(tmp_path, registry_root):
    """tune() trims and colour-tests every spot once per threshold and keeps those a setting
    keeps; score() without that shortcut runs the pipeline's own post-processing: the same
    figures."""
    (tmp_path / "images").mkdir()
    (tmp_path / "gt").mkdir()
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        img = np.full((200, 300, 3), 20, np.uint8)
        truth = np.zeros((200, 300), np.uint8)
        for k in range(12):                  # soft specks, confident and faint, some side by side
            y, x = int(rng.integers(15, 185)), int(rng.integers(15, 285))
            tone = (240, 170)[k % 2]
            cv2.circle(img, (x, y), 3, (tone,) * 3, -1)
            cv2.circle(img, (x + 9, y), 2, (tone - 60,) * 3, -1)
            cv2.circle(truth, (x, y), 3, 255, -1)
        for k in range(6):                   # bright specks of a colour no dust has: never dust
            y, x = int(rng.integers(15, 185)), int(rng.integers(15, 285))
            cv2.circle(img, (x, y), 3, (230, 60, 230), -1)   # magenta: first and last channel alike
            truth[max(0, y - 8):y + 9, max(0, x - 8):x + 9] = 0
        cv2.imwrite(str(tmp_path / "images" / f"{name}.png"), cv2.GaussianBlur(img, (0, 0), 1.5))
        cv2.imwrite(str(tmp_path / "gt" / f"{name}.png"), truth)
    frames = tune.frame_probabilities("identity", str(tmp_path), registry_root)
    table = {(r["threshold"], r["spot_threshold"], r["min_area"]): r for r in tune.tune(frames)["table"]}
    for threshold, spot, area in ((0.1, 0.6, 1), (0.2, 0.8, 4), (0.3, 0.3, 1)):
        exact = tune.score(frames, threshold, spot, area)
        row = table[(threshold, max(threshold, spot), area)]
        assert all(row[k] == round(v, 4) for k, v in exact.items() if isinstance(v, float)), (row, exact)
    untrimmed = tune.score(frames, 0.1, 0.6, 1, trim=0.0)
    assert tune.score(frames, 0.1, 0.6, 1)["pixel_precision"] > untrimmed["pixel_precision"]
    untested = tune.score(frames, 0.1, 0.6, 1, neutral=0.0)
    assert tune.score(frames, 0.1, 0.6, 1)["object_precision"] > untested["object_precision"]


def test_int8_is_refused_when_recall_or_precision_drops_more_than_a_point():
    from trainer import quantize
    fp16 = {"object_recall": 0.90, "object_precision": 0.86}
    assert quantize.refusal(quantize.drops(fp16, {"object_recall": 0.895, "object_precision": 0.87})) is None
    assert "recall drops by 0.020" in quantize.refusal(
        quantize.drops(fp16, {"object_recall": 0.88, "object_precision": 0.86}))
    assert "precision drops by 0.030" in quantize.refusal(
        quantize.drops(fp16, {"object_recall": 0.91, "object_precision": 0.83}))

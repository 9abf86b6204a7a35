"""The spot trim (shared/trim.py): a spot narrows to the pixels the scan shows as dust, and is
never split, dropped or merged."""
import cv2
import numpy as np
import pytest

from shared.pipeline import segment
from shared.spots import find_spots
from shared.trim import trim_spots


def _scene(seed=0, shape=(120, 160), level=150):
    """A grey scene with grain, as a scan's flat area."""
    rng = np.random.default_rng(seed)
    return np.clip(level + rng.normal(0, 3, shape + (3,)), 0, 255).astype(np.uint8)


def _trimmed(img, mask, fraction=0.45):
    spots, mask = find_spots(mask, np.full(mask.shape, 255, np.uint8))
    return spots, trim_spots(mask.copy(), img, spots, fraction)


def test_a_dark_speck_keeps_its_own_pixels_and_loses_the_halo():
    img = _scene()
    cv2.circle(img, (60, 50), 4, (60, 60, 60), -1)
    speck = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(speck, (60, 50), 4, 255, -1)
    halo = cv2.dilate(speck, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))   # 4 px too wide
    spots, trimmed = _trimmed(img, halo)
    assert len(spots) == 1
    assert np.array_equal(trimmed > 0, speck > 0)
    assert np.array_equal(_trimmed(img, halo, fraction=0)[1], halo)                 # 0: off


def test_spots_over_the_area_bound_are_left_as_they_are(monkeypatch):
    from shared import defaults
    img = _scene()
    cv2.circle(img, (60, 50), 4, (60, 60, 60), -1)
    halo = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(halo, (60, 50), 8, 255, -1)
    monkeypatch.setattr(defaults, "TRIM_MAX_AREA", int(np.count_nonzero(halo)) - 1)
    assert np.array_equal(_trimmed(img, halo)[1], halo)


def test_a_bright_speck_on_a_dark_scene_is_trimmed_on_its_own_polarity():
    img = _scene(level=40)
    cv2.circle(img, (80, 60), 3, (200, 200, 200), -1)
    speck = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(speck, (80, 60), 3, 255, -1)
    _, trimmed = _trimmed(img, cv2.dilate(speck, np.ones((7, 7), np.uint8)))
    assert np.array_equal(trimmed > 0, speck > 0)


def test_a_faint_speck_merged_with_a_dark_one_keeps_its_core_and_the_spot_stays_one():
    img = _scene(1)
    cv2.circle(img, (50, 60), 4, (30, 30, 30), -1)        # dark: 120 levels under the scene
    cv2.circle(img, (68, 60), 3, (120, 120, 120), -1)     # faint: 30 levels, 0.25 of the dark one
    blob = np.zeros(img.shape[:2], np.uint8)
    cv2.rectangle(blob, (44, 54), (73, 66), 255, -1)      # one wide spot over both
    spots, trimmed = _trimmed(img, blob)
    after, _ = find_spots(trimmed.copy(), np.full(blob.shape, 255, np.uint8))
    assert len(spots) == len(after) == 1                  # joined again, not split
    assert trimmed[60, 50] and trimmed[60, 68]            # both cores
    assert not trimmed[55, 44] and not trimmed[66, 73]    # the corners of the box: clean scene
    assert np.count_nonzero(trimmed) < 0.5 * np.count_nonzero(blob)


def test_segment_trims_by_default_and_reports_the_setting(make_session):
    """Identity model (probability = the blue channel, blurred here into a wide halo): the
    thresholded probabilities are wider than the speck; the trimmed mask is the speck."""
    img = np.zeros((224, 224, 3), np.uint8)
    cv2.circle(img, (100, 120), 5, (255, 255, 255), -1)
    img = cv2.GaussianBlur(img, (0, 0), 2.5)
    speck = np.zeros((224, 224), np.uint8)
    cv2.circle(speck, (100, 120), 5, 255, -1)
    untrimmed = segment(img, make_session(tile=224, threshold=0.1, trim=0.0))
    trimmed = segment(img, make_session(tile=224, threshold=0.1))
    assert trimmed.mask.sum() < 0.7 * untrimmed.mask.sum()
    assert len(trimmed.spots) == len(untrimmed.spots) == 1
    assert trimmed.spots[0]["area"] == np.count_nonzero(trimmed.mask)
    assert np.count_nonzero((trimmed.mask > 0) & (speck > 0)) >= 0.9 * np.count_nonzero(speck)


def test_a_16_bit_grey_scan_is_trimmed_like_its_8_bit_copy():
    img = np.ascontiguousarray(_scene()[:, :, 0])
    cv2.circle(img, (60, 50), 4, 60, -1)
    halo = np.zeros(img.shape, np.uint8)
    cv2.circle(halo, (60, 50), 8, 255, -1)
    _, from8 = _trimmed(img, halo)
    _, from16 = _trimmed(img.astype(np.uint16) * 257, halo)
    assert np.array_equal(from8, from16) and 0 < np.count_nonzero(from8) < np.count_nonzero(halo)


def test_the_spot_list_follows_the_trim_and_keeps_the_score_it_was_kept_for():
    img = _scene()
    cv2.circle(img, (60, 50), 4, (60, 60, 60), -1)
    halo = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(halo, (60, 50), 8, 255, -1)
    prob8 = np.zeros(halo.shape, np.uint8)
    prob8[halo > 0] = 100
    prob8[50, 66] = 240                    # the confident pixel lies in the halo the trim removes
    spots, mask = find_spots(halo.copy(), prob8)
    trimmed = trim_spots(mask, img, spots, 0.45)
    ys, xs = np.nonzero(trimmed)
    assert spots[0]["score"] == round(240 / 255, 3) and not trimmed[50, 66]
    assert spots[0]["area"] == ys.size and spots[0]["bbox"] == [xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1]


def test_a_trim_without_the_matching_scan_is_refused():
    halo = np.zeros((40, 40), np.uint8)
    halo[10:20, 10:20] = 255
    spots, mask = find_spots(halo, np.full(halo.shape, 255, np.uint8))
    for pixels in (None, np.zeros((40, 41, 3), np.uint8)):
        with pytest.raises(ValueError, match="needs the scan"):
            trim_spots(mask, pixels, spots, 0.45)


def test_models_tuned_before_the_trim_run_untrimmed_unless_asked():
    from shared import defaults
    from shared.pipeline import SegmentOptions
    assert SegmentOptions().resolved({"recommended": {"threshold": 0.1}}).trim == 0.0
    assert SegmentOptions(trim=0.3).resolved({"recommended": {"threshold": 0.1}}).trim == 0.3
    assert SegmentOptions().resolved({"recommended": {"threshold": 0.1, "trim": 0.4}}).trim == 0.4
    assert SegmentOptions().resolved({"recommended": {}}).trim == defaults.TRIM

"""The spot colour test (shared/neutral.py): dust blends the scene towards a grey, so a spot of
another hue, or more colourful than its surroundings, is the scene's own and goes."""
import cv2
import numpy as np
import pytest

from shared.neutral import drop_tinted_spots
from shared.pipeline import SegmentOptions
from shared.spots import find_spots, spots_and_mask

FOLIAGE = (60, 140, 70)            # BGR: a green scene
SPECKS = {                         # BGR of a disk on it, and whether dust could make it
    "dark grey": ((40, 40, 40), True),        # the colour goes towards a grey
    "black": ((0, 0, 0), True),               # a shadow does the same: undecided, kept
    "white": ((235, 235, 235), True),         # a negative's dust
    "dark red": ((30, 30, 110), False),       # a berry: another hue
    "glow": ((96, 224, 112), False),          # brighter, of the scene's own colour: a lit seed
}


SHAPE = (90, 90 * len(SPECKS))    # one 90 px square per speck


def _scene(colour=FOLIAGE, seed=0):
    rng = np.random.default_rng(seed)
    return np.clip(np.array(colour, np.float32) + rng.normal(0, 2, SHAPE + (3,)), 0, 255).astype(np.uint8)


def _specks(img):
    """Draws one disk of each SPECKS colour, left to right; returns the mask of spots (a 2 px
    halo around each, as the network's probabilities give) and the names in order."""
    mask = np.zeros(img.shape[:2], np.uint8)
    for i, (bgr, _) in enumerate(SPECKS.values()):
        cv2.circle(img, (45 + 90 * i, 45), 6, bgr, -1)
        cv2.circle(mask, (45 + 90 * i, 45), 8, 255, -1)
    return mask, list(SPECKS)


def _kept(img, mask, tolerance=10.0):
    spots, mask = find_spots(mask, np.full(mask.shape, 255, np.uint8))
    kept, mask = drop_tinted_spots(mask, img, spots, tolerance)
    return {int(s["centroid"][0]) // 90 for s in kept}, mask


def test_specks_dust_could_make_stay_and_the_scene_s_own_go():
    img = _scene()
    mask, names = _specks(img)
    kept, out = _kept(img, mask.copy())
    assert {names[i] for i in kept} == {name for name, (_, dust) in SPECKS.items() if dust}
    for i, name in enumerate(names):                   # the mask loses exactly the dropped spots
        column = slice(90 * i, 90 * (i + 1))
        assert np.array_equal(out[:, column], mask[:, column] if i in kept else 0 * mask[:, column]), name


def test_off_at_zero_on_grey_scans_and_alike_at_16_bit():
    img = _scene()
    mask, _ = _specks(img)
    assert len(_kept(img, mask.copy(), tolerance=0)[0]) == len(SPECKS)
    assert len(_kept(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), mask.copy())[0]) == len(SPECKS)   # no colour
    assert _kept(img.astype(np.uint16) * 257, mask.copy())[0] == _kept(img, mask.copy())[0]


def test_on_a_grey_scene_any_colour_is_too_much():
    img = _scene(colour=(128, 128, 128))
    mask, names = _specks(img)
    kept = {names[i] for i in _kept(img, mask)[0]}
    assert "dark grey" in kept and "white" in kept and "dark red" not in kept


def test_spots_and_mask_runs_it_and_models_tuned_before_it_are_left_alone():
    img = _scene()
    mask, _ = _specks(img)
    prob8 = np.where(mask > 0, 200, 0).astype(np.uint8)
    tested = spots_and_mask(prob8, 0.5, pixels=img, neutral=10.0)[0]
    assert len(spots_and_mask(prob8, 0.5, pixels=img)[0]) == len(SPECKS) > len(tested) == 3
    from shared import defaults
    assert SegmentOptions().resolved().neutral == defaults.NEUTRAL > 0
    assert SegmentOptions().resolved({"recommended": {"threshold": 0.2}}).neutral == 0.0
    assert SegmentOptions().resolved({"recommended": {"threshold": 0.2, "neutral": 7}}).neutral == 7


def test_the_probe_sorts_spots_by_truth_and_polarity():
    from types import SimpleNamespace

    from trainer.neutral_probe import measure
    from trainer.tune import Frame
    img = _scene()
    mask, _ = _specks(img)
    truth = np.zeros(mask.shape, np.uint8)
    for i, (_, dust) in enumerate(SPECKS.values()):
        if dust:
            cv2.circle(truth, (45 + 90 * i, 45), 6, 255, -1)
    frame = Frame("a", np.where(mask > 0, 200, 0).astype(np.uint8), None, img)
    found = measure([frame], {"a": truth}, SimpleNamespace(threshold=0.5, spot_threshold=0.0, min_area=1))
    assert sorted((k, len(v)) for k, v in found.items()) == [
        (("bright", "dust"), 1), (("bright", "false"), 1), (("dark", "dust"), 2), (("dark", "false"), 1)]
    assert all(d <= 10 for d, _ in found[("dark", "dust")]) and all(d > 10 for d, _ in found[("dark", "false")])


def test_neighbours_borders_rings_and_bounds(monkeypatch):
    from shared import defaults
    img = _scene()
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.circle(img, (40, 45), 5, (30, 30, 110), -1)            # dark red: dropped
    cv2.circle(img, (58, 45), 5, (40, 40, 40), -1)             # grey, 8 px away: kept
    cv2.circle(img, (0, 45), 5, (40, 40, 40), -1)              # grey, cut by the left border: kept
    for x in (40, 58, 0):
        cv2.circle(mask, (x, 45), 6, 255, -1)
    spots, mask = find_spots(mask, np.full(mask.shape, 255, np.uint8))
    assert len(spots) == 3
    kept, out = drop_tinted_spots(mask.copy(), img, [dict(s) for s in spots], 10.0)
    assert sorted(s["centroid"][0] // 10 for s in kept) == [0, 5]
    assert out[45, 40] == 0 and out[45, 58] == 255 and out[45, 1] == 255
    # a spot with no clean ring to measure against is kept
    whole = np.full(img.shape[:2], 255, np.uint8)
    assert len(drop_tinted_spots(whole, img, find_spots(whole.copy(), whole)[0], 10.0)[0]) == 1
    # a spot whose box is over the bound is kept untested (memory), the rest tested as before
    monkeypatch.setattr(defaults, "NEUTRAL_MAX_BOX", 100)
    assert len(drop_tinted_spots(mask.copy(), img, [dict(s) for s in spots], 10.0)[0]) == 3
    with pytest.raises(ValueError, match="needs the scan"):
        drop_tinted_spots(mask.copy(), None, spots, 10.0)

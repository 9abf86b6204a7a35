"""Accuracy of dust masks against ground truth, at native resolution.

The same definitions as ../shared/eval/score.py (the project's reference scorer), written
for dustspot so training, `dustspot evaluate` and the model manifest use one implementation:
- ground truth: 255 dust, 128 don't care (too faint to see), 0 clean;
- pixel precision / recall / Dice over all pixels of all dusty images; a prediction on a
  don't-care pixel is not a false positive;
- object recall: GT components (8-connected) touched by the prediction, also by extent bin;
- object precision: predicted components touching GT dust, on dusty images; components
  that touch only don't-care pixels are excused;
- false-positive components per megapixel on clean images (no dust at all).
"""
from dataclasses import dataclass, field

import cv2
import numpy as np

EXTENT_BINS = ((0, 8), (8, 16), (16, 32), (32, None))
TRUTH_VALUES = (0, 128, 255)


def truth_problem(truth) -> str | None:
    """Why `truth` (an array as decoded, e.g. cv2.IMREAD_UNCHANGED) is no ground-truth mask, or None.

    A mask is one 8-bit channel holding only 0, 128 and 255; a 0/1 mask, a 16-bit one or a
    colour one (a CVAT class-colour export) would otherwise be scored as something it is not."""
    if truth is None:
        return "does not decode as an image"
    truth = np.asarray(truth)
    if truth.ndim == 3 and truth.shape[2] == 1:
        truth = truth[..., 0]
    if truth.ndim != 2:
        return (f"has {truth.shape[2] if truth.ndim == 3 else truth.ndim} channels (a colour mask?); "
                "expected one 8-bit channel of 0 (clean), 128 (don't care), 255 (dust)")
    if truth.dtype != np.uint8:
        return f"is {truth.dtype}; expected 8-bit values 0 (clean), 128 (don't care), 255 (dust)"
    counts = np.bincount(truth.ravel(), minlength=256)
    counts[list(TRUTH_VALUES)] = 0
    bad = np.flatnonzero(counts)
    if bad.size:
        shown = ", ".join(map(str, bad[:5])) + (", ..." if bad.size > 5 else "")
        hint = " (a 0/1 mask? dust must be 255)" if set(bad.tolist()) <= {1} else ""
        return (f"holds values other than 0, 128 and 255: {shown} in {int(counts.sum())} pixels{hint}")
    return None


def _components(mask: np.ndarray):
    return cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)


class Truth:
    """A ground-truth mask with its components computed once (scoring many masks against it)."""

    def __init__(self, truth: np.ndarray):
        problem = truth_problem(truth)
        if problem:
            raise ValueError(f"ground truth {problem}")
        self.shape = truth.shape
        self.size = truth.size
        self.clean = not (truth > 0).any()
        self.gt, self.care = truth == 255, truth != 128
        self.count, self.labels, stats, _ = _components(self.gt)
        self.extent = np.maximum(stats[1:, cv2.CC_STAT_WIDTH], stats[1:, cv2.CC_STAT_HEIGHT])


@dataclass
class DustScore:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    gt_hit: list = field(default_factory=lambda: [0] * len(EXTENT_BINS))
    gt_total: list = field(default_factory=lambda: [0] * len(EXTENT_BINS))
    pred_good: int = 0
    pred_counted: int = 0
    clean_fp: int = 0
    clean_mp: float = 0.0
    dusty_images: int = 0
    clean_images: int = 0

    def add(self, truth, pred: np.ndarray) -> None:
        """One image: truth 0/128/255 (array or Truth), pred nonzero = dust; same shape."""
        if not isinstance(truth, Truth):
            truth = Truth(truth)
        if truth.shape != pred.shape:
            raise ValueError(f"prediction {pred.shape} != ground truth {truth.shape}")
        pred = pred > 0
        if truth.clean:                                # a clean image
            self.clean_images += 1
            self.clean_fp += _components(pred)[0] - 1
            self.clean_mp += truth.size / 1e6
            return
        self.dusty_images += 1
        gt, care = truth.gt, truth.care
        self.tp += int(np.count_nonzero(gt & pred))
        self.fp += int(np.count_nonzero(~gt & pred & care))
        self.fn += int(np.count_nonzero(gt & ~pred))
        n, labels, extent = truth.count, truth.labels, truth.extent
        touched = np.zeros(n, bool)
        touched[np.unique(labels[pred & (labels > 0)])] = True
        for b, (lo, hi) in enumerate(EXTENT_BINS):
            sel = (extent >= lo) & (extent < (hi if hi is not None else np.inf))
            self.gt_total[b] += int(sel.sum())
            self.gt_hit[b] += int((touched[1:] & sel).sum())
        n2, labels2, _, _ = _components(pred)
        good = np.unique(labels2[gt & (labels2 > 0)])
        excused = np.setdiff1d(np.unique(labels2[~care & (labels2 > 0)]), good)
        self.pred_counted += n2 - 1 - len(excused)
        self.pred_good += len(good)

    def result(self) -> dict:
        """The metrics; those of dusty images are None when no dusty image was scored (not 0.0:
        nothing was measured), as clean_fp_per_mp is without clean images."""
        dusty = self.dusty_images > 0
        bins = {f"{lo}-{hi if hi is not None else 'inf'}": round(h / t, 4) if t else None
                for (lo, hi), h, t in zip(EXTENT_BINS, self.gt_hit, self.gt_total)}
        return {
            "pixel_precision": self.tp / max(self.tp + self.fp, 1) if dusty else None,
            "pixel_recall": self.tp / max(self.tp + self.fn, 1) if dusty else None,
            "pixel_dice": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1) if dusty else None,
            "object_recall": sum(self.gt_hit) / max(sum(self.gt_total), 1) if dusty else None,
            "object_recall_by_extent": bins,
            "gt_objects": sum(self.gt_total),
            "object_precision": self.pred_good / max(self.pred_counted, 1) if dusty else None,
            "pred_objects": self.pred_counted,
            "clean_fp_per_mp": self.clean_fp / self.clean_mp if self.clean_mp else None,
        }

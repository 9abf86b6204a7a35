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


def _components(mask: np.ndarray):
    return cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)


class Truth:
    """A ground-truth mask with its components computed once (scoring many masks against it)."""

    def __init__(self, truth: np.ndarray):
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

    def add(self, truth, pred: np.ndarray) -> None:
        """One image: truth 0/128/255 (array or Truth), pred nonzero = dust; same shape."""
        if not isinstance(truth, Truth):
            truth = Truth(truth)
        if truth.shape != pred.shape:
            raise ValueError(f"prediction {pred.shape} != ground truth {truth.shape}")
        pred = pred > 0
        if truth.clean:                                # a clean image
            self.clean_fp += _components(pred)[0] - 1
            self.clean_mp += truth.size / 1e6
            return
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
        bins = {f"{lo}-{hi if hi is not None else 'inf'}": round(h / t, 4) if t else None
                for (lo, hi), h, t in zip(EXTENT_BINS, self.gt_hit, self.gt_total)}
        return {
            "pixel_precision": self.tp / max(self.tp + self.fp, 1),
            "pixel_recall": self.tp / max(self.tp + self.fn, 1),
            "pixel_dice": 2 * self.tp / max(2 * self.tp + self.fp + self.fn, 1),
            "object_recall": sum(self.gt_hit) / max(sum(self.gt_total), 1),
            "object_recall_by_extent": bins,
            "gt_objects": sum(self.gt_total),
            "object_precision": self.pred_good / max(self.pred_counted, 1),
            "pred_objects": self.pred_counted,
            "clean_fp_per_mp": self.clean_fp / self.clean_mp if self.clean_mp else None,
        }

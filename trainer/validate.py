"""Held-out synthetic validation: predict a tile pool, score pixels and objects per threshold."""
import cv2
import numpy as np
import torch

from .synth import DONT_CARE

DUST_MIN = 200          # truth values above this are dust (255; 128 is don't care)

THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.1, 0.91, 0.05))
BATCH = 32


@torch.no_grad()
def predict(model, images, device="cpu", amp=True, batch=BATCH):
    """Probabilities [N, H, W] float32 for a uint8 BGR pool [N, H, W, 3]."""
    model.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(np.array(images[i:i + batch])).to(device)
        x = x.permute(0, 3, 1, 2).float() / 255.0
        with torch.autocast(device_type=device if device != "cpu" else "cpu",
                            dtype=torch.bfloat16, enabled=amp):
            logits = model(x)
        out.append(torch.sigmoid(logits.float())[:, 0].cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,) + images.shape[1:3], np.float32)


def _objects(binary):
    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return n - 1, labels


def truth(mask):
    """(dust, care) booleans of a truth mask (an array, or a torch tensor on any device: the
    training loop's targets): 255 dust, 128 don't care, 0 clean."""
    if not isinstance(mask, torch.Tensor):
        mask = np.asarray(mask)
    return mask > DUST_MIN, mask != DONT_CARE


def object_scores(prob, masks, threshold):
    """Object recall (a GT object is found when any of its pixels is predicted) and precision
    (a predicted object is right when it touches any GT pixel; one that touches only
    don't-care pixels is not counted), pooled over tiles."""
    found = total = right = predicted = 0
    for p, m in zip(prob, masks):
        pb = p >= threshold
        gb, care = truth(m)
        ng, gl = _objects(gb)
        npd, pl = _objects(pb)
        total += ng
        if ng:
            found += len(np.unique(gl[pb & (gl > 0)]))
        if npd:
            good = np.unique(pl[gb & (pl > 0)])
            excused = np.setdiff1d(np.unique(pl[~care & (pl > 0)]), good)
            right += len(good)
            predicted += npd - len(excused)
    return (found / total if total else 1.0), (right / predicted if predicted else 1.0)


def score(prob, masks, thresholds=THRESHOLDS):
    """Pixel precision/recall/Dice per threshold (don't-care pixels are never false positives);
    the best-Dice threshold with object scores."""
    gt, care = truth(masks)
    rows = []
    for t in thresholds:
        pred = prob >= t
        tp = float(np.logical_and(pred, gt).sum())
        fp = float(np.logical_and(pred, care).sum()) - tp
        fn = float(gt.sum()) - tp
        rows.append({"threshold": float(t),
                     "precision": tp / (tp + fp) if tp + fp else 1.0,
                     "recall": tp / (tp + fn) if tp + fn else 1.0,
                     "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0})
    best = max(rows, key=lambda r: r["dice"])
    rec, prec = object_scores(prob, masks, best["threshold"])
    best = dict(best, object_recall=rec, object_precision=prec)
    return {"best": best, "curve": rows}

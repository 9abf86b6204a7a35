"""Does a network separate the dust from the scene around it, or only raise both?

    python -m trainer.separation WEIGHTS.pt SET [--size 2400] [--only NAME,NAME] [--gates-from-blur SIGMA]

SET holds images/<name>.jpg and gt/<name>.png (255 dust, 128 don't care, 0 clean): realdust-dev
or held-out frames (`dustspot synth --scans`). Each image is scaled to SIZE (long side, as
`dustspot segment` does), run through the network (torch, the weights as trained, fp32) and
compared with its truth, per object rather than per threshold:

- each dust object's peak probability (median over objects);
- the background: pixels more than BACKGROUND_GAP px from any dust or don't-care pixel (its
  median, 99th and 99.9th percentile), and its blobs >= BLOB_THRESHOLD per megapixel;
- separation: the share of objects whose peak clears the background's p99 (p99.9).

A loss that only lifts the network's answer moves the median peak and the background together
and leaves the separation where it was (models/README.md, session 16: 11-16 % on realdust-dev's
scan01 for every run). A diagnosis, never a selection criterion on realdust-dev.

--gates-from-blur SIGMA: EfficientNet's squeeze-excitation gates each block's channels by the
average over the whole window, a global switch. With this flag every window's gates come from a
copy of it blurred by SIGMA (working px): tone and colour kept, texture gone. If the network
separated dust from a busy scene locally and only the gates switched it off, the separation
would rise (models/README.md, session 23: on scan01 it lifts everything and separates less).
"""
import argparse
import contextlib
import os

import cv2
import numpy as np
from scipy import ndimage

from shared.pipeline import SegmentOptions, to_working, working_shape

from . import export, validate

BACKGROUND_GAP = 7          # working px from any truth: the halo of a found speck is not background
BLOB_THRESHOLD = 0.15
WINDOW, MARGIN = 512, 32    # inference windows (px), each with this much context on every side


def squeeze_convs(net):
    """The squeeze-excitation reduce convolutions of smp's EfficientNet blocks, in order."""
    return [module for name, module in net.named_modules() if name.endswith("_se_reduce")]


@contextlib.contextmanager
def _squeeze_hooks(net, stored, replay):
    """Record each block's squeezed (pooled) input into `stored`, or replay it from there."""
    def hook(index):
        if replay:
            return lambda module, args: (stored[index],)
        return lambda module, args: stored.__setitem__(index, args[0])
    handles = [conv.register_forward_pre_hook(hook(i)) for i, conv in enumerate(squeeze_convs(net))]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _predict(net, win, gates_blur):
    if not gates_blur:
        return validate.predict(net, win[None], "cpu", amp=False)[0]
    stored = {}
    with _squeeze_hooks(net, stored, replay=False):
        validate.predict(net, cv2.GaussianBlur(win, (0, 0), gates_blur)[None], "cpu", amp=False)
    with _squeeze_hooks(net, stored, replay=True):
        return validate.predict(net, win[None], "cpu", amp=False)[0]


def probabilities(net, img, gates_blur=None):
    """Probabilities of a uint8 BGR image, window by window (bounded memory at any size); with
    `gates_blur`, squeeze-excitation gates from each window blurred by that sigma (px)."""
    h, w = img.shape[:2]
    out = np.zeros((h, w), np.float32)
    for y in range(0, h, WINDOW):
        for x in range(0, w, WINDOW):
            y0, x0 = max(0, y - MARGIN), max(0, x - MARGIN)
            y1, x1 = min(h, y + WINDOW + MARGIN), min(w, x + WINDOW + MARGIN)
            win = img[y0:y1, x0:x1]
            ph, pw = -win.shape[0] % 32, -win.shape[1] % 32
            win = np.pad(win, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            prob = _predict(net, win, gates_blur)
            yy, xx = min(y + WINDOW, h), min(x + WINDOW, w)
            out[y:yy, x:xx] = prob[y - y0:yy - y0, x - x0:xx - x0]
    return out


def at_size(img, truth, size):
    """Image and truth scaled so the long side is `size`: the image as `dustspot segment` scales
    it (shared.pipeline), the truth by nearest neighbour."""
    wh, ww = working_shape(*img.shape[:2], SegmentOptions(mode="size", working_size=size))
    return to_working(img, wh, ww), cv2.resize(truth, (ww, wh), interpolation=cv2.INTER_NEAREST)


def separation(prob, truth):
    """Per-object peaks against the background's distribution; a dict of figures."""
    dust, care = validate.truth(truth)
    labels, n = ndimage.label(dust, structure=np.ones((3, 3)))
    peaks = np.asarray(ndimage.maximum(prob, labels, np.arange(1, n + 1))) if n else np.zeros(0)
    near = cv2.dilate((dust | ~care).astype(np.uint8),
                      cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * BACKGROUND_GAP + 1,) * 2))
    background = prob[near == 0]
    _, blobs = ndimage.label((prob >= BLOB_THRESHOLD) & (near == 0), structure=np.ones((3, 3)))
    if not background.size:         # dust and its gap cover the image: nothing to compare with
        return {"objects": int(n), "median_peak": float(np.median(peaks)) if n else None,
                "background_median": None, "background_p99": None, "background_p999": None,
                "blobs_per_mp": None, "above_p99": None, "above_p999": None}
    p99, p999 = np.percentile(background, [99, 99.9])
    return {
        "objects": int(n),
        "median_peak": float(np.median(peaks)) if n else None,
        "background_median": float(np.median(background)),
        "background_p99": float(p99), "background_p999": float(p999),
        "blobs_per_mp": blobs / (background.size / 1e6),
        "above_p99": float(np.mean(peaks > p99)) if n else None,
        "above_p999": float(np.mean(peaks > p999)) if n else None,
    }


def read_pair(root, name):
    """(image, truth) of SET/images/NAME.* and SET/gt/NAME.png, or a SystemExit naming the file."""
    images = os.path.join(root, "images")
    files = [f for f in os.listdir(images) if os.path.splitext(f)[0] == name]
    truth_path = os.path.join(root, "gt", name + ".png")
    img = cv2.imread(os.path.join(images, files[0]), cv2.IMREAD_COLOR) if files else None
    truth = cv2.imread(truth_path, cv2.IMREAD_GRAYSCALE)
    if img is None or truth is None:
        raise SystemExit(f"{root}: {name}: image or {truth_path} missing or unreadable")
    if truth.shape != img.shape[:2]:
        raise SystemExit(f"{truth_path}: {truth.shape[::-1]} px, its image is {img.shape[1::-1]}")
    return img, truth


def _positive(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text}: a blur sigma in px, more than 0")
    return value


def _fmt(value, spec):
    return "-" if value is None else format(value, spec)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("set", help="a folder with images/ and gt/")
    ap.add_argument("--size", type=int, default=2400, help="working size (long side, px)")
    ap.add_argument("--only", help="comma-separated image names (default: all)")
    ap.add_argument("--gates-from-blur", type=_positive, metavar="SIGMA",
                    help="squeeze-excitation gates from each window blurred by SIGMA px (see above)")
    args = ap.parse_args(argv)
    names = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(args.set, "gt")) if f.endswith(".png"))
    if args.only:
        wanted = args.only.split(",")
        missing = sorted(set(wanted) - set(names))
        if missing:
            raise SystemExit(f"{args.set}: no truth for {', '.join(missing)}")
        names = wanted
    net = export.load_weights_or_exit(args.weights)
    if args.gates_from_blur and not squeeze_convs(net):
        raise SystemExit(f"{args.weights}: --gates-from-blur: the network has no squeeze-excitation blocks")
    for name in names:
        img, truth = at_size(*read_pair(args.set, name), args.size)
        s = separation(probabilities(net, img, args.gates_from_blur), truth)
        print(f"{name}: objects {s['objects']}, median peak {_fmt(s['median_peak'], '.3f')}, "
              f"background median {_fmt(s['background_median'], '.3f')} p99 {_fmt(s['background_p99'], '.3f')} "
              f"p99.9 {_fmt(s['background_p999'], '.3f')}, blobs >= {BLOB_THRESHOLD} per MP "
              f"{_fmt(s['blobs_per_mp'], '.1f')}; objects above p99 {_fmt(s['above_p99'], '.2f')}, "
              f"above p99.9 {_fmt(s['above_p999'], '.2f')}", flush=True)


if __name__ == "__main__":
    main()

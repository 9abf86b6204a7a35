"""Does the scene around a speck decide whether the network sees it?

    python -m trainer.context_probe WEIGHTS PHOTO_OR_FOLDER... [--size 2400] [--count 24]

Each clean photo is scaled to SIZE (long side, as `dustspot segment` scales a scan), and an
unmistakable speck, a flat grey disk (TONE of 255, RADIUS working px, anti-aliased edge), is
pasted at COUNT random places at least MIN_CONTRAST brighter than it, one at a time, each into a
WINDOW px crop of the photo around it.
The network's peak probability on the disk is read with and without the disk; per photo it
prints the median peak, the share of disks found (peak >= FOUND where the photo alone stays
below it), and the median lift.

Why (session 20): 0.4.0 misses realdust-dev's scan01 dust even where it is a speck of ~30 on sky
of ~200 (peak 0.01-0.07). Alone on a grey canvas the same speck scores 0.99; a crisp disk pasted
into scan01 scores 0.01 (median of 12 places), and flattening the scene beyond ~100 px of it brings
it back to ~0.5. The network switches dust off across whole photos: it finds no disk on Path
(scan01's photo) nor on the training photo OneStandsOut, and 8 of 8 on 84 of the 102 wallpaper
photo files (models/README.md, "Session 20").
Needs no truth: it runs on any photo, training photos included.

--hue pastes the disk in the colour of its place instead (the patch's mean colour scaled to the
disk's tone: as dark, not grey), only where that patch has colour (synth.chroma_per_luma at
least synth.TWIN_MIN_CHROMA, the twins' bound). A dark coloured speck is what a shadow or a seed looks like, and grey is what
dust goes to (session 19), so a network that reads the colour cue finds the grey disks and not
these: the pair measures the cue (session 22's shadow twins) without any truth.
"""
import argparse
import os

import numpy as np
import torch

from shared.pipeline import SegmentOptions, to_working, working_shape

from . import export, synth, validate

WINDOW = 320        # working px around each disk: the suppression reaches ~100 px (session 20)
TONE = 27           # of 255: scan01's dust (B 25, G 39, R 29 inside its objects)
RADIUS = 4.0        # working px: a ~12 px speck at a 5000 px scan's scale
FOUND = 0.4         # 0.4.1's spot threshold
COUNT = 24
MIN_CONTRAST = 40   # the disk's place is at least this much brighter (mean luma, of 255)
PLACE_TRIES = 20    # random places tried per disk wanted
SIZE = 2400         # working size (long side): 0.4.1's
PROBE_COUNT = 16    # disks per photo when a training run watches the probe


def paste_disk(window, tone=TONE, radius=RADIUS):
    """A copy of `window` (uint8 BGR) with a flat disk of `tone` (a grey, or BGR) at its centre;
    (copy, disk mask)."""
    h, w = window.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    alpha = np.clip(radius + 0.5 - np.hypot(yy - h // 2, xx - w // 2), 0, 1)[..., None]
    pasted = window.astype(np.float32) * (1 - alpha) + np.asarray(tone, np.float32) * alpha
    return np.round(pasted).astype(np.uint8), alpha[..., 0] > 0.5


def probe(net, photo, count=COUNT, tone=TONE, radius=RADIUS, seed=0, device="cpu", hue=False):
    """Disk figures of one working-scale photo: {"disks", "median_peak", "found", "median_lift"}.
    Disks go only where the photo is MIN_CONTRAST brighter than them: fewer than `count` on a
    dark photo, a ValueError on one with no such place. hue: disks in their place's colour
    (see the module docstring), only where it has colour."""
    h, w = photo.shape[:2]
    if min(h, w) < WINDOW:
        raise ValueError(f"{w}x{h} px is smaller than the {WINDOW} px window")
    rng = np.random.default_rng(seed)
    luma = photo.mean(2)
    near = int(2 * radius) + 4          # half side of the patch the disk must stand out from
    plain, dusted = [], []
    for _ in range(count * PLACE_TRIES):
        y, x = int(rng.integers(0, h - WINDOW + 1)), int(rng.integers(0, w - WINDOW + 1))
        cy, cx = y + WINDOW // 2, x + WINDOW // 2
        if luma[cy - near:cy + near + 1, cx - near:cx + near + 1].mean() < tone + MIN_CONTRAST:
            continue                    # a dark disk on a dark patch is no speck at all
        window = photo[y:y + WINDOW, x:x + WINDOW]
        colour = tone
        if hue:
            mean = window[WINDOW // 2 - near:WINDOW // 2 + near + 1,
                          WINDOW // 2 - near:WINDOW // 2 + near + 1].reshape(-1, 3).mean(0)
            if synth.chroma_per_luma(mean) < synth.TWIN_MIN_CHROMA:
                continue                # a grey place: its colour is the grey disk's
            colour = mean * tone / mean.mean()
        with_disk, disk = paste_disk(window, colour, radius)
        plain.append(window)
        dusted.append(with_disk)
        if len(plain) == count:
            break
    if not plain:
        raise ValueError(f"no place {MIN_CONTRAST} levels brighter than the disk (tone {tone})"
                         + (" with colour" if hue else ""))
    with torch.no_grad():
        peaks = validate.predict(net, np.stack(dusted), device, amp=False)[:, disk].max(1)
        before = validate.predict(net, np.stack(plain), device, amp=False)[:, disk].max(1)
    return {"disks": len(plain), "median_peak": float(np.median(peaks)),
            "found": float(np.mean((peaks >= FOUND) & (before < FOUND))),
            "median_lift": float(np.median(peaks - before))}


def photo_paths(given):
    """Files as given (realdust-dev's own photos too: a diagnosis); folders as the trainer reads
    them (one size per photo, evaluation photos left out)."""
    paths = [p for p in given if os.path.isfile(p)]
    return paths + synth.load_backgrounds([p for p in given if not os.path.isfile(p)])


def working_photo(path, size=SIZE):
    """A photo file scaled to working size `size` (long side) as `dustspot segment` scales a scan;
    a ValueError when it cannot be read."""
    img = synth.read_background(path)
    if img is None:
        raise ValueError("unreadable")
    wh, ww = working_shape(*img.shape[:2], SegmentOptions(mode="size", working_size=size))
    return to_working(img, wh, ww)


def probe_photos(net, photos, count=PROBE_COUNT, device="cpu"):
    """{scene: share of disks found} over `photos` ({scene: working-scale photo}); a photo
    with no place for a disk is left out. What `dustspot train --probe-photos` logs."""
    found = {}
    for scene, photo in photos.items():
        try:
            found[scene] = probe(net, photo, count, device=device)["found"]
        except ValueError:
            continue
    return found


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights")
    ap.add_argument("photos", nargs="+", help="clean photos: files, or folders (one size per photo, "
                    "evaluation photos left out, as the trainer reads them)")
    ap.add_argument("--size", type=int, default=SIZE, help="working size (long side, px)")
    ap.add_argument("--count", type=int, default=COUNT, help="disks per photo")
    ap.add_argument("--tone", type=int, default=TONE, help="disk grey, of 255")
    ap.add_argument("--radius", type=float, default=RADIUS, help="disk radius, working px")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hue", action="store_true", help="disks in the colour of their place (as dark)")
    args = ap.parse_args(argv)
    missing = [p for p in args.photos if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"no such file or folder: {', '.join(missing)}")
    paths = photo_paths(args.photos)
    if not paths:
        raise SystemExit(f"no photos found in {', '.join(args.photos)}")
    net = export.load_weights_or_exit(args.weights)
    for path in paths:
        try:
            r = probe(net, working_photo(path, args.size), args.count, args.tone, args.radius, args.seed,
                      hue=args.hue)
        except ValueError as exc:
            print(f"{path}: {exc}, skipped", flush=True)
            continue
        print(f"{synth.scene_name(path)}: {r['disks']} {'hued ' if args.hue else ''}disks, found {r['found']:.2f}, median peak {r['median_peak']:.3f}, "
              f"median lift {r['median_lift']:+.3f}", flush=True)


if __name__ == "__main__":
    main()

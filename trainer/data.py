"""Tile pools: synthetic tiles generated once into memory-mapped arrays, then trained over.

Why a pool and not on-the-fly generation: on a 2-core machine every core-ms the generator
takes is stolen from the network; generating once and training several epochs (with free
flip/rotate augmentation) gives more steps per hour.  numpy + OpenCV only.
"""
import hashlib
import json
import os
import time
from multiprocessing import get_context

import numpy as np

from . import settings, synth

SAMPLES_PER_BACKGROUND = 24      # tiles cut from one decoded background (decode is the slow part)
# While build_pool fills a pool, this file holds how many tiles from the start are written: a
# run given --growing-pool trains on that prefix meanwhile (trainer/gpu_sweep.sh: on a lent GPU
# the pool took a third of the time, session 14). Chunks are collected in order, so it only grows.
READY_FILE = "ready"
VALID_EVERY = 6                  # about one scene (photo) in VALID_EVERY goes to validation
BUSY_TEXTURE, BUSY_SHARE = settings.BUSY_TEXTURE, settings.BUSY_SHARE   # --busy-texture, --busy-share


def split_backgrounds(paths, valid_every=VALID_EVERY):
    """Split by scene (a stable hash of synth.scene_name), so validation scenes are never
    trained on, not even in another size."""
    train, valid = [], []
    for p in paths:
        h = int(hashlib.sha1(synth.scene_name(p).encode()).hexdigest(), 16)
        (valid if h % valid_every == 0 else train).append(p)
    if not valid and count_scenes(train) > 1:                        # one scene to validate on
        last = synth.scene_name(train[-1])
        valid = [p for p in train if synth.scene_name(p) == last]
        train = [p for p in train if synth.scene_name(p) != last]
    return train, valid


def _arrays(folder, count, size, mode):
    images = np.lib.format.open_memmap(os.path.join(folder, "images.npy"), mode=mode,
                                       dtype=np.uint8, shape=(count, size, size, 3))
    masks = np.lib.format.open_memmap(os.path.join(folder, "masks.npy"), mode=mode,
                                      dtype=np.uint8, shape=(count, size, size))
    return images, masks


def count_scenes(paths):
    return len({synth.scene_name(p) for p in paths})


def _texture_of(path):
    """synth.scene_texture of a background, None when it cannot be decoded."""
    img = synth.read_background(path)
    return None if img is None else synth.scene_texture(img)


def _fill_chunk(args):
    folder, count, size, seed, chunk, backgrounds, busy, busy_share, sprite_dir, generator = args
    images, masks = _arrays(folder, count, size, "r+")
    rng = np.random.default_rng([seed, chunk])
    sprites = synth.SpriteBank(sprite_dir) if sprite_dir else None
    choices = busy if busy and rng.random() < busy_share else backgrounds
    bg = None
    while bg is None:
        bg = synth.read_background(choices[rng.integers(len(choices))])
    start = chunk * SAMPLES_PER_BACKGROUND
    with synth.overridden(generator):
        for i in range(start, min(count, start + SAMPLES_PER_BACKGROUND)):
            images[i], masks[i] = synth.make_sample(bg, rng, sprites, size)
    images.flush()
    masks.flush()
    return min(count, start + SAMPLES_PER_BACKGROUND) - start


def file_sha1(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()


def build_pool(folder, backgrounds, count, size, seed, sprite_dir=None, workers=2, progress=None,
               busy_share=BUSY_SHARE, busy_texture=BUSY_TEXTURE, generator=None):
    """Generate `count` tiles into folder/{images,masks}.npy (reused when already complete).
    generator: {NAME: share} drawn instead of synth's defaults (synth.GENERATOR_SHARES)."""
    if not backgrounds:
        raise ValueError(f"{folder}: no background photos to cut tiles from")
    os.makedirs(folder, exist_ok=True)
    meta_path = os.path.join(folder, "pool.json")
    meta = {"count": count, "size": size, "seed": seed, "sprites": sprite_dir,
            "backgrounds": len(backgrounds),
            "backgrounds_sha1": hashlib.sha1("\n".join(backgrounds).encode()).hexdigest(),
            # a pool made by another version of the generator is not reused
            "generator_sha1": file_sha1(synth.__file__),
            "busy_texture": busy_texture, "busy_share": busy_share}
    if generator:                   # absent when empty: pools of the defaults stay reusable
        meta["generator"] = dict(sorted(generator.items()))
    if os.path.exists(meta_path):
        stored = pool_meta(folder)
        stored.pop("busy_backgrounds", None)          # an outcome of the build, not an input
        if stored == meta:
            _mark_ready(folder, count)
            return load_pool(folder)
        os.remove(meta_path)
    _mark_ready(folder, 0)
    _arrays(folder, count, size, "w+")
    chunks = range((count + SAMPLES_PER_BACKGROUND - 1) // SAMPLES_PER_BACKGROUND)
    with (get_context("spawn").Pool(workers) if workers > 1 else _Serial()) as pool:
        textures = pool.map(_texture_of, backgrounds)
        readable = [p for p, t in zip(backgrounds, textures) if t is not None]
        if not readable:
            raise ValueError(f"{folder}: none of the {len(backgrounds)} background photos decodes")
        busy = [p for p, t in zip(backgrounds, textures) if t is not None and t >= busy_texture]
        jobs = [(folder, count, size, seed, c, readable, busy, busy_share, sprite_dir, generator or {})
                for c in chunks]
        ready = 0
        for n in pool.imap(_fill_chunk, jobs):
            ready += n
            _mark_ready(folder, ready)
            progress and progress(n)
    meta["busy_backgrounds"] = sorted({synth.scene_name(p) for p in busy})
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return load_pool(folder)


def _mark_ready(folder, tiles):
    part = os.path.join(folder, READY_FILE + ".part")
    with open(part, "w") as f:
        f.write(str(tiles))
    os.replace(part, os.path.join(folder, READY_FILE))     # a reader never sees half a number


def ready_tiles(folder):
    """How many tiles of the pool in `folder` can be trained on now: all of a complete pool, the
    prefix written so far of one that build_pool (in another process) is still filling, else 0."""
    meta = pool_meta(folder)
    if meta:
        return int(meta["count"])
    try:
        with open(os.path.join(folder, READY_FILE)) as f:
            return int(f.read())
    except (OSError, ValueError):
        return 0


def wait_for_pool(folder, tiles, timeout_s, poll_s=1.0):
    """The pool in `folder` (as load_pool) once at least `tiles` of it are written; a ValueError
    naming the folder when that takes longer than timeout_s."""
    deadline = time.monotonic() + timeout_s
    while ready_tiles(folder) < tiles:
        if time.monotonic() > deadline:
            raise ValueError(f"{folder}: {ready_tiles(folder)} tiles written after {timeout_s:g} s, "
                             f"fewer than the {tiles} needed to start (is its build_pool running?)")
        time.sleep(poll_s)
    return load_pool(folder)


class _Serial:
    """multiprocessing.Pool's map / imap in this process (workers=1)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def map(self, fn, items):
        return [fn(item) for item in items]

    def imap(self, fn, items):
        return (fn(item) for item in items)


def pool_meta(folder):
    """What build_pool recorded about a pool (pool.json), {} when there is none."""
    path = os.path.join(folder, "pool.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def load_pool(folder):
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")
    masks = np.load(os.path.join(folder, "masks.npy"), mmap_mode="r")
    return images, masks


def describe_pool(masks, limit=2000):
    """Share of dust pixels and of empty tiles, for the run's config."""
    m = np.asarray(masks[:limit])
    dust = m == synth.DUST
    return {"dust_pixel_fraction": float(dust.mean()),
            "dont_care_pixel_fraction": float((m == synth.DONT_CARE).mean()),
            "empty_tile_fraction": float((~dust.any(axis=(1, 2))).mean())}


def load_prepared(folders, split: str, tile: int):
    """Tiles written by `dustspot prepare` (PNG, 8 or 16 bit) as in-memory uint8 arrays.

    16-bit tiles are reduced to 8 bits like the pipeline's 8-bit path sees them; tiles of
    another size than the run's are skipped (prepare with the same --tile).
    """
    import cv2
    images, masks = [], []
    for folder in folders:
        image_dir = os.path.join(folder, split, "images")
        if not os.path.isdir(image_dir):
            continue
        for name in sorted(os.listdir(image_dir)):
            image = cv2.imread(os.path.join(image_dir, name), cv2.IMREAD_UNCHANGED)
            mask = cv2.imread(os.path.join(folder, split, "masks", name), cv2.IMREAD_GRAYSCALE)
            if image is None or mask is None or image.shape[:2] != (tile, tile):
                continue
            if image.dtype == np.uint16:
                image = (image >> 8).astype(np.uint8)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            images.append(image[:, :, :3])
            masks.append(mask)
    if not images:
        return None
    return np.stack(images), np.stack(masks)

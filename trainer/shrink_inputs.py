"""Small copies of the training inputs, for shipping them to a remote GPU machine.

    python -m trainer.shrink_inputs OUT PHOTO_FOLDER... [--sprites DIR] [--long 2048] [--quality 88]

Backgrounds: every image under each PHOTO_FOLDER, re-encoded as JPEG at most LONG px on the
long side, under its original relative name (OpenCV reads by content, so a `.png` name holding
JPEG bytes still decodes) and with symbolic links kept: `data.split_backgrounds` splits by
`synth.scene_name` (package folder or file name), so the train/validation split is the same as
with the originals.  2048 px keeps the
scene at about the working resolution (2016 px long side), which is what the tiles see.

Sprites: only the alpha channel is kept (all `synth.SpriteBank` reads), in 32 levels, written as
a one-channel PNG (SpriteBank takes a one-channel image as the alpha itself), which compresses the
film-damage sprites from 34 to 12 MB (18 MB as four-channel PNGs, as 0.4.0's copies were).

dustspot-unet 0.4.0 (stage v6) was trained on the copies this makes from the wallpapers,
mate-backgrounds and ../shared/data/film-damage-sprites with the defaults.
"""
import argparse
import os

import cv2
import numpy as np

from .synth import IMAGE_EXTENSIONS, SPRITE_KINDS

LONG = 2048
QUALITY = 88
ALPHA_STEP = 8              # 32 alpha levels
ALPHA_FLOOR = 6             # below this the sprite is transparent


def shrink_photos(src: str, dst: str, long: int = LONG, quality: int = QUALITY) -> int:
    written = 0
    for dirpath, _, files in os.walk(src):
        out_dir = os.path.join(dst, os.path.relpath(dirpath, src))
        os.makedirs(out_dir, exist_ok=True)
        for name in files:
            if not name.lower().endswith(IMAGE_EXTENSIONS):
                continue
            path, out = os.path.join(dirpath, name), os.path.join(out_dir, name)
            if os.path.lexists(out):
                os.remove(out)
            if os.path.islink(path):
                os.symlink(os.readlink(path), out)
                continue
            img = cv2.imread(path, cv2.IMREAD_COLOR)
            if img is None:
                continue
            scale = long / max(img.shape[:2])
            if scale < 1:
                img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok:
                with open(out, "wb") as f:
                    f.write(buf.tobytes())
                written += 1
    return written


def shrink_sprites(src: str, dst: str) -> int:
    written = 0
    for kind in SPRITE_KINDS:
        folder = os.path.join(src, kind)
        if not os.path.isdir(folder):
            continue
        os.makedirs(os.path.join(dst, kind), exist_ok=True)
        for name in sorted(os.listdir(folder)):
            img = cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim != 3 or img.shape[2] != 4:
                continue
            a = img[..., 3].astype(np.int32)
            a = np.where(a < ALPHA_FLOOR, 0, (a + ALPHA_STEP // 2) // ALPHA_STEP * ALPHA_STEP)
            cv2.imwrite(os.path.join(dst, kind, name), np.clip(a, 0, 255).astype(np.uint8),
                        [cv2.IMWRITE_PNG_COMPRESSION, 9])
            written += 1
    return written


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("photos", nargs="*", help="background folders (each becomes OUT/bg/<its name>)")
    ap.add_argument("--sprites", help="film-damage sprite folder (-> OUT/sprites)")
    ap.add_argument("--long", type=int, default=LONG)
    ap.add_argument("--quality", type=int, default=QUALITY)
    args = ap.parse_args(argv)
    for folder in args.photos:
        dst = os.path.join(args.out, "bg", os.path.basename(os.path.normpath(folder)))
        print(f"{folder}: {shrink_photos(folder, dst, args.long, args.quality)} images -> {dst}")
    if args.sprites:
        dst = os.path.join(args.out, "sprites")
        print(f"{args.sprites}: {shrink_sprites(args.sprites, dst)} sprites -> {dst}")


if __name__ == "__main__":
    main()

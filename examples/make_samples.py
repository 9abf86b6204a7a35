"""Make the bundled sample scans: photos with synthetic dust, plus their ground truth.

    python examples/make_samples.py [--sprites ../shared/data/film-damage-sprites]

Photos: scikit-image's bundled `astronaut` (NASA, public domain), `coffee` (Rachel
Michetti, CC0) and `rocket` (NASA, public domain); see skimage/data/README.txt. They are
upscaled to a film-scan-like 1800 px long side (dust sizes follow that resolution), dusted
with trainer.synth.dust_scan (dark dust, as on a positive) and written as JPEG, with the
true dust masks in examples/truth/ for a quick check of a model.
"""
import argparse
import os

import cv2
import numpy as np

from trainer.synth import SpriteBank, dust_scan

PHOTOS = {"astronaut": "astronaut.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}
LONG_SIDE = 1800


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sprites", default=None, help="film-damage-sprites folder (optional)")
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    import skimage.data
    folder = os.path.dirname(skimage.data.__file__)
    here = os.path.dirname(os.path.abspath(__file__))
    os.makedirs(os.path.join(here, "scans"), exist_ok=True)
    os.makedirs(os.path.join(here, "truth"), exist_ok=True)
    sprites = SpriteBank(args.sprites) if args.sprites else None
    rng = np.random.default_rng(args.seed)
    for name, file in PHOTOS.items():
        photo = cv2.imread(os.path.join(folder, file), cv2.IMREAD_COLOR)
        scale = LONG_SIDE / max(photo.shape[:2])
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        scan, truth = dust_scan(photo, rng, sprites, dark=True)
        cv2.imwrite(os.path.join(here, "scans", f"{name}.jpg"), scan, [cv2.IMWRITE_JPEG_QUALITY, 92])
        cv2.imwrite(os.path.join(here, "truth", f"{name}.png"), truth)
        print(name, scan.shape, f"{int((truth > 0).sum())} dust pixels")


if __name__ == "__main__":
    main()

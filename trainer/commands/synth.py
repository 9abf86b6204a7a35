"""`dustspot synth`: write synthetic dust image + mask pairs (deterministic for a seed)."""
import json
import os

import click
import cv2
import numpy as np

from .. import synth as generator_module
from ..data import file_sha1
from . import generator_option


@click.command("synth")
@click.argument("backgrounds", nargs=-1, required=True)
@click.option("--out", required=True, help="writes OUT/images/NNNNN.png and OUT/masks/NNNNN.png")
@click.option("--count", default=100, show_default=True)
@click.option("--size", default=256, show_default=True, help="tile side at working resolution")
@click.option("--seed", default=0, show_default=True)
@click.option("--sprites", default=None, help="optional film-damage sprite folder")
@click.option("--scans", is_flag=True,
              help="whole frames instead of tiles: OUT/images/*.jpg + OUT/gt/*.png (255 dust, "
                   "128 too faint, 0 clean), from validation backgrounds only: a held-out set "
                   "scored like realdust-dev")
@click.option("--clean", default=2, show_default=True, help="with --scans: extra dust-free frames")
@click.option("--long-side", default=3300, show_default=True, help="with --scans: frame long side in px")
@generator_option("the samples")
def synth(backgrounds, out, count, size, seed, sprites, scans, clean, long_side, generator):
    """Composite synthetic dust onto BACKGROUNDS (image files or folders)."""
    with generator_module.overridden(generator):
        _write(backgrounds, out, count, size, seed, sprites, scans, clean, long_side)
    # what drew the set, beside it: a held-out frame set drawn with other shares says so
    settings = {"backgrounds": list(backgrounds), "count": count, "seed": seed, "sprites": sprites,
                "generator": dict(sorted(generator.items())),
                "generator_sha1": file_sha1(generator_module.__file__)}
    settings.update({"scans": True, "clean": clean, "long_side": long_side} if scans else {"size": size})
    with open(os.path.join(out, SETTINGS_FILE), "w") as f:
        json.dump(settings, f, indent=1)


SETTINGS_FILE = "synth.json"


def _write(backgrounds, out, count, size, seed, sprites, scans, clean, long_side):
    if scans:
        from .. import scanset
        try:
            names = scanset.build(backgrounds, out, count, clean, seed, sprites, long_side=long_side,
                                  progress=lambda name: click.echo(f"  {name}"))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        click.echo(f"{len(names)} frames -> {out} (score: dustspot evaluate {out}/images {out}/gt)")
        return
    paths = generator_module.load_backgrounds(backgrounds)
    if not paths:
        raise click.UsageError("no background images found")
    bank = generator_module.SpriteBank(sprites) if sprites else None
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)
    width = max(5, len(str(count - 1)))
    cache, unreadable = {}, set()
    with click.progressbar(range(count), label="synth") as bar:
        for i in bar:
            # one generator per sample: any sample can be regenerated alone from (seed, i)
            rng = np.random.default_rng([seed, i])
            bg = None
            while bg is None:          # unreadable or tiny files are skipped, and remembered
                path = paths[rng.integers(len(paths))]
                if path in unreadable:
                    continue
                if path not in cache:
                    cache.clear()      # keep one decoded background in memory
                    cache[path] = generator_module.read_background(path)
                bg = cache[path]
                if bg is None:
                    unreadable.add(path)
                    if len(unreadable) == len(paths):
                        raise click.ClickException("no readable background image")
            image, mask = generator_module.make_sample(bg, rng, bank, size)
            name = f"{i:0{width}d}.png"
            cv2.imwrite(os.path.join(out, "images", name), image)
            cv2.imwrite(os.path.join(out, "masks", name), mask)
    click.echo(f"{count} samples from {len(paths)} backgrounds -> {out}")


if __name__ == "__main__":
    synth()

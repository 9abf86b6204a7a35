"""`dustspot train`: train a dust segmentation network on synthetic tiles."""
import sys

import click

from .. import settings
from . import generator_option

ARCHITECTURES = ("unet", "unetplusplus", "unet-fullres", "unet-chroma")      # trainer.model.ARCHITECTURES, without importing torch


def _command_line(name):
    """The command as a user would type it, whether run as `dustspot NAME` or `python -m`."""
    args = sys.argv[1:]
    if not args or args[0] != name:
        args = [name] + args
    return " ".join(["dustspot"] + args)


@click.command("train")
@click.argument("backgrounds", nargs=-1, required=True)
@click.option("--run", "run_dir", required=True, help="run folder: pools, checkpoints, metrics")
@click.option("--sprites", default=None, help="optional film-damage sprite folder")
@click.option("--size", "tile", default=settings.TILE, show_default=True, help="tile size")
@click.option("--batch", default=settings.BATCH, show_default=True)
@click.option("--steps", default=None, type=int, help="stop after this many steps")
@click.option("--minutes", default=None, type=float, help="stop after this much training time")
@click.option("--lr", default=settings.LR, show_default=True)
@click.option("--arch", default=settings.ARCH, type=click.Choice(ARCHITECTURES), show_default=True)
@click.option("--encoder", default=settings.ENCODER, show_default=True)
@click.option("--decoder-channels", default=",".join(map(str, settings.DECODER_CHANNELS)), show_default=True)
@click.option("--pool", default=settings.POOL, show_default=True, help="training tiles to generate")
@click.option("--valid-pool", default=settings.VALID_POOL, show_default=True)
@click.option("--threads", default=settings.THREADS, show_default=True, help="torch threads")
@click.option("--workers", default=settings.WORKERS, show_default=True, help="tile generator processes")
@click.option("--seed", default=settings.SEED, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda")
@click.option("--amp/--no-amp", default=None,
              help="bf16 autocast (default: on CUDA and on CPUs with bf16 kernels, AVX-512 or AMX)")
@click.option("--resume", is_flag=True, help="continue from RUN/checkpoint.pt")
@click.option("--checkpoint-minutes", default=settings.CHECKPOINT_MINUTES, show_default=True)
@click.option("--eval-minutes", default=settings.EVAL_MINUTES, show_default=True)
@click.option("--data", "datasets", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="labelled tiles from `dustspot prepare` (repeatable), mixed into every batch")
@click.option("--init", default=None, type=click.Path(exists=True, dir_okay=False),
              help="start from these weights (an earlier run's model.pt or trainer/weights/*.pt)")
@click.option("--freeze-init", is_flag=True,
              help="train only what --init lacks (a unet-fullres branch on a unet): ~3x faster on CPU")
@click.option("--stop-minutes", default=None, type=float,
              help="stop (checkpoint, evaluate, model.pt) after this much training time; the learning-rate "
                   "schedule still follows --minutes/--steps")
@click.option("--real-fraction", default=0.5, show_default=True, help="share of each batch from --data tiles")
@click.option("--teacher", default=None, type=click.Path(exists=True, dir_okay=False),
              help="distil: also learn this network's probabilities (trained weights .pt of any architecture, or an exported model's IR .xml, run in OpenVINO)")
@click.option("--distill-weight", default=settings.DISTILL_WEIGHT, show_default=True,
              help="weight of the BCE against the teacher's probabilities")
@click.option("--busy-share", default=settings.BUSY_SHARE, show_default=True, type=click.FloatRange(0, 1),
              help="share of training tile chunks cut from busy photos (on top of their uniform share)")
@click.option("--busy-texture", default=settings.BUSY_TEXTURE, show_default=True, type=click.FloatRange(0),
              help="how busy a photo must be to count as busy (trainer.synth.scene_texture)")
@click.option("--hard-positives", "hard_positive_weight", default=settings.HARD_POSITIVE_WEIGHT,
              show_default=True, type=click.FloatRange(0),
              help="weight of the BCE of the hardest quarter of the dust pixels (0: off)")
@generator_option("the training pool")
@click.option("--probe-photos", multiple=True, type=click.Path(exists=True),
              help="clean photos (files or folders, repeatable) to run trainer.context_probe on at every "
                   "evaluation and at the end: the share of pasted disks the network finds on each")
@click.option("--growing-pool", is_flag=True,
              help="RUN/pool-train is still being filled by another process (trainer/gpu_sweep.sh): "
                   "start once a batch of it is written, train on what is written so far")
def train(backgrounds, run_dir, sprites, tile, batch, steps, minutes, lr, arch, encoder,
          decoder_channels, pool, valid_pool, threads, workers, seed, device, amp, resume,
          checkpoint_minutes, eval_minutes, datasets, init, stop_minutes, real_fraction, teacher,
          distill_weight, freeze_init, busy_share, busy_texture, hard_positive_weight, generator,
          growing_pool, probe_photos):
    """Train on synthetic dust composited onto BACKGROUNDS (image files or folders).

    With --resume the run goes on as it was configured: flags given that differ from its
    configuration are ignored, with a warning naming each and the value in force. The budget
    flags given replace the run's: --minutes alone lifts its --steps limit and --steps alone its
    --minutes limit (give both to keep both)."""
    from shared.errors import DustspotError

    from .. import train as training  # torch: only when the command runs
    try:
        decoder = tuple(int(c) for c in decoder_channels.split(","))
    except ValueError:
        raise click.BadParameter(f"{decoder_channels!r}: give whole numbers, comma-separated (e.g. 16,8,8,8,8)",
                                 param_hint="--decoder-channels") from None
    ctx = click.get_current_context()
    given = {}
    if resume:              # the flags typed (or set in the environment), not their defaults
        values = {"tile": tile, "batch": batch, "lr": lr, "arch": arch, "encoder": encoder,
                  "decoder_channels": decoder, "pool": pool, "valid_pool": valid_pool, "seed": seed,
                  "sprites": sprites, "init": init, "datasets": list(datasets), "teacher": teacher,
                  "real_fraction": real_fraction, "distill_weight": distill_weight, "freeze_init": freeze_init,
                  "busy_share": busy_share, "busy_texture": busy_texture,
                  "hard_positive_weight": hard_positive_weight, "generator_settings": generator}
        for param in ctx.command.params:
            if param.name in values and ctx.get_parameter_source(param.name) in (
                    click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT):
                given[max(param.opts, key=len)] = values[param.name]
        given["BACKGROUNDS"] = list(backgrounds)
    try:
        training.train(run_dir, backgrounds, sprites, tile, batch, steps, minutes, lr, arch, encoder,
                       decoder, pool, valid_pool, threads, workers, seed, device, amp, resume,
                       checkpoint_minutes, eval_minutes, command=_command_line("train"),
                       echo=click.echo, datasets=datasets, real_fraction=real_fraction,
                       init=init, stop_minutes=stop_minutes, teacher=teacher, distill_weight=distill_weight,
                       freeze_init=freeze_init, busy_share=busy_share, busy_texture=busy_texture,
                       hard_positive_weight=hard_positive_weight, growing_pool=growing_pool, generator=generator, probe_photos=probe_photos, given=given, warn=lambda message: click.echo(message, err=True))
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    train()

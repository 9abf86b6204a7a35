"""`dustspot prune`: a trained network with fewer channels, to fine-tune with `dustspot train --init`."""
import click

from .. import settings


@click.command("prune")
@click.argument("weights", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="pruned weights file to write")
@click.option("--ratio", default=settings.PRUNE_RATIO, show_default=True,
              type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="share of the channels of every prunable group to remove")
@click.option("--round-to", default=settings.PRUNE_ROUND_TO, show_default=True, type=click.IntRange(1),
              help="kept channel counts are multiples of this")
def prune(weights, out, ratio, round_to):
    """Prune WEIGHTS (a run folder, model.pt, checkpoint.pt or trainer/weights/*.pt) by weight
    magnitude. The result keeps the trained weights of the channels left; fine-tune it with
    `dustspot train ... --init OUT --teacher WEIGHTS` before exporting."""
    import torch

    from .. import model as models
    from .. import prune as pruning
    from ..export import load_checkpoint
    try:
        net, state, _run = load_checkpoint(weights)
    except Exception as exc:            # a truncated file, another pickle, a folder without weights
        raise click.ClickException(f"{weights}: not trained dustspot weights ({exc})") from None
    before_params = models.count_params(net)
    try:
        pruning.prune(net, ratio, round_to)
    except ValueError as exc:
        raise click.ClickException(f"{weights}: {exc}") from None
    after_params = models.count_params(net)
    config = {**state["config"], "spec": net.spec,
              "pruned": {"from": weights, "ratio": ratio, "round_to": round_to,
                         "parameters": [before_params, after_params],
                         "previous": state["config"].get("pruned")}}
    # no summary: the unpruned network's metrics and threshold are not this network's
    torch.save({"model": net.state_dict(), "config": config, "summary": {}}, out)
    click.echo(f"{out}: {after_params / 1e6:.2f} M parameters (was {before_params / 1e6:.2f} M), "
               f"{len(net.spec['channels'])} layers narrowed (`dustspot bench --model` gives GFLOP and speed)")


if __name__ == "__main__":
    prune()

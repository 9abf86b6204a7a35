"""`dustspot tune`: choose a model's threshold, spot threshold and min area on labelled frames."""
import json

import click

from shared.commands.options import pipeline_options, split_pipeline_kwargs


@click.command("tune")
@click.argument("frames", type=click.Path(exists=True, file_okay=False))
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="write the whole table here")
@pipeline_options
def tune(frames, json_out, **kwargs):
    """Sweep post-processing settings on FRAMES (images/ + gt/ with 255/128/0 truth).

    Prints the best setting by the harmonic mean of object recall, object precision and
    pixel Dice (clean-frame false positives at most 2 per MP). Use held-out frames, never the
    set you report. Working resolution and tiling flags apply (tune for the settings you run).
    The threshold / spot threshold / min area flags are ignored: they are what is swept; the
    spots are trimmed by --trim and tested by --neutral (default: the model's, as segment
    resolves them).
    """
    from shared.errors import DustspotError
    from shared.registry import resolve

    from .. import tune as tuning
    try:
        model_ref, registry_root, options, settings = split_pipeline_kwargs(kwargs)
        found = tuning.frame_probabilities(model_ref, frames, registry_root, settings, options)
        resolved = options.resolved(resolve(model_ref, registry_root).manifest)
    except (DustspotError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    result = tuning.tune(found, trim=resolved.trim, neutral=resolved.neutral)
    if json_out:
        with open(json_out, "w") as f:
            json.dump(result, f, indent=1)
    best = result["best"]
    click.echo(json.dumps({k: v for k, v in best.items() if k != "object_recall_by_extent"}))
    click.echo(f"dustspot segment ... --threshold {best['threshold']} --spot-threshold "
               f"{best['spot_threshold']} --min-area {best['min_area']} --trim {best['trim']} "
               f"--neutral {best['neutral']:g}")


if __name__ == "__main__":
    tune()

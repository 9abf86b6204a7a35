"""`dustspot export`: a trained run -> OpenVINO IR (FP16) -> a registry version."""
import click

from .. import settings
from .train import _command_line


@click.command("export")
@click.argument("source")
@click.option("--registry", default=None, help="registry root (default: DUSTSPOT_MODELS or the bundled models/)")
@click.option("--name", default=None, help="model name (default: the bundled model's name)")
@click.option("--version", "version", required=True, help="new, immutable version string")
@click.option("--latest/--no-latest", default=True, show_default=True, help="point `latest` at it")
@click.option("--frames", type=click.Path(exists=True, file_okay=False), default=None,
              help="held-out frames (images/ + gt/, e.g. `dustspot synth --scans`): choose the "
                   "recommended threshold, spot threshold and min area there")
@click.option("--working-sizes", default=",".join(map(str, settings.EXPORT_WORKING_SIZES)), show_default=True,
              help="with --frames: working sizes (long side) to try; the best becomes the recommended one")
@click.option("--calibration-pool", type=click.Path(exists=True, file_okay=False), default=None,
              help="with --int8: a tile pool (a run's pool-train/) to calibrate on (default: SOURCE's run)")
@click.option("--int8", is_flag=True, help="also publish VERSION-int8 (NNCF PTQ), if its object recall and precision are within 1 point of "
                   "FP16's (on --frames with the recommended post-processing, else on the held-out tiles)")
@click.option("--int8-latest", is_flag=True, help="point `latest` at the INT8 version instead")
def export(source, registry, name, version, latest, frames, working_sizes, calibration_pool, int8, int8_latest):
    """Export SOURCE (a run folder or checkpoint file) and publish it."""
    from shared import defaults
    from shared.errors import DustspotError

    from .. import export as exporting
    try:
        sizes = [int(w) for w in working_sizes.split(",")]
    except ValueError:
        raise click.BadParameter(f"{working_sizes!r}: give whole numbers, comma-separated (e.g. 2016,2400)",
                                 param_hint="--working-sizes") from None
    try:
        exporting.export(source, registry or defaults.models_root(), name or defaults.MODEL, version,
                         command=_command_line("export"), make_latest=latest and not int8_latest,
                         echo=click.echo, int8=int8, int8_latest=int8_latest,
                         frames=frames, working_sizes=sizes,
                         calibration_pool=calibration_pool)
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    export()

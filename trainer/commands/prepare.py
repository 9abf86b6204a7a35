"""`dustspot prepare`: a CVAT Segmentation mask 1.1 export -> training tiles."""
import click

from shared import defaults
from shared.commands.options import rule_option


@click.command("prepare")
@click.argument("export_path", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="An empty (or new) folder for train/, valid/ and dataset.json.")
@click.option("--force", is_flag=True,
              help="--out holds a previous prepare's output: remove its train/, valid/ and dataset.json first "
                   "(refused when it holds anything else).")
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the images are when the export has no JPEGImages/.")
@rule_option("--working-size", rule="working_size", default=defaults.WORKING_SIZE, show_default=True,
             help="Long side of the working image the tiles are cut from (the model's working size).")
@rule_option("--tile", rule="tile", default=256, show_default=True, help="Tile side in px.")
@click.option("--valid-every", type=click.IntRange(2), default=5, show_default=True,
              help="About one scan in N goes to validation (by name).")
@click.option("--label", "labels", multiple=True,
              help="Labels that count as dust, as named in labelmap.txt (case-sensitive; default: all but "
                   "background). An unknown name is an error.")
@click.option("--strict/--lenient", default=True, show_default=True,
              help="Mask pixels of a colour that is in no label of labelmap.txt are an error (labels "
                   "silently lost otherwise); --lenient: a warning per mask on stderr, and they count "
                   "as background.")
def prepare(export_path, out_dir, force, images_dir, working_size, tile, valid_every, labels, strict):
    """Cut a CVAT export (zip or folder; label colours from labelmap.txt) into training tiles.

    Every scan is checked: an unsafe name, an undecodable image or mask, or a mask of another
    size than its image fails the command with a list of the bad scans (exit status 1) and
    leaves no tiles behind, and so do mask colours that are in no label of labelmap.txt (with
    --lenient they are a warning naming the mask and the colours, and count as background).
    Scan names with folders ('roll1/frame3') give tiles named 'roll1__frame3_Y_X.png'.
    """
    from shared.errors import DustspotError

    from ..prepare import prepare as do_prepare
    try:
        result = do_prepare(export_path, out_dir, images_dir, working_size, tile, valid_every,
                            list(labels) or None, echo=click.echo, force=force, strict=strict,
                            warn=lambda message: click.echo(message, err=True))
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{result['scans']} scans -> {result['tiles']['train']} train / {result['tiles']['valid']} "
               f"valid tiles in {out_dir}")

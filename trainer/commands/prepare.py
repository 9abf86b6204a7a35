"""`dustspot prepare`: a CVAT Segmentation mask 1.1 export -> training tiles."""
import click


@click.command("prepare")
@click.argument("export_path", type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False))
@click.option("--images", "images_dir", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the images are when the export has no JPEGImages/.")
@click.option("--working-size", type=click.IntRange(64), default=2016, show_default=True)
@click.option("--tile", type=click.IntRange(32), default=256, show_default=True)
@click.option("--valid-every", type=click.IntRange(2), default=5, show_default=True,
              help="About one scan in N goes to validation (by name).")
@click.option("--label", "labels", multiple=True, help="Labels that count as dust (default: all but background).")
def prepare(export_path, out_dir, images_dir, working_size, tile, valid_every, labels):
    """Cut a CVAT export (zip or folder; label colours from labelmap.txt) into training tiles."""
    from ..prepare import prepare as do_prepare
    result = do_prepare(export_path, out_dir, images_dir, working_size, tile, valid_every,
                        list(labels) or None, echo=click.echo)
    click.echo(f"{result['scans']} scans -> {result['tiles']['train']} train / {result['tiles']['valid']} "
               f"valid tiles in {out_dir}")

"""`dustspot export-cvat`: predicted masks as CVAT pre-annotations (Segmentation mask 1.1)."""
import click


@click.command("export-cvat")
@click.argument("out_root")
@click.option("--to", "zip_path", required=True, type=click.Path(dir_okay=False), help="The .zip to write.")
@click.option("--top", type=click.IntRange(1), default=None, help="Only the N scans `dustspot select` ranks first.")
def export_cvat(out_root, zip_path, top):
    """Write the scans under OUT_ROOT and their masks as a CVAT "Segmentation mask 1.1" export.

    Create a CVAT task with the images in the zip's JPEGImages/, upload the zip as annotations
    (format Segmentation mask 1.1), correct, export again, then `dustspot prepare` it.
    """
    from ..cvat import write_export
    from ..review import cvat_entries, load_reports, rank_for_labelling
    rows = rank_for_labelling(load_reports(out_root))
    rows = rows[:top] if top else rows
    if not rows:
        raise click.ClickException(f"no finished scans under {out_root}")
    write_export(cvat_entries(out_root, rows), zip_path)
    click.echo(f"{len(rows)} scans -> {zip_path}")

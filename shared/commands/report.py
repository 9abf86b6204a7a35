"""`dustspot report`: report.html for a folder (or S3 prefix) of results."""
import click


@click.command("report")
@click.argument("out_root")
@click.option("--title", default=None)
def report(out_root, title):
    """Write OUT_ROOT/report.html: thumbnails with detections, most detections first."""
    from ..report import write_report
    click.echo(write_report(out_root, title))

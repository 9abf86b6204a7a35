"""`dustspot enqueue`: one job per scan of a folder or S3 prefix."""
import time

import click

from shared.commands.options import build_options, rule_option
from shared.defaults import MAX_TILE, MAX_WORKING_SIZE


@click.command("enqueue")
@click.argument("source")
@click.option("--out", "dest", required=True, help="Destination folder or s3://bucket/prefix.")
@click.option("--batch", default=None, help="Batch name (default: derived from SOURCE and --out, so a re-run resumes).")
@click.option("--queue", "queue_name", default="dustspot", show_default=True)
@click.option("--model", "model_ref", default=None, help="Model reference for these jobs (default: the worker's).")
@click.option("--force", is_flag=True, help="Re-run scans whose outputs already exist.")
@click.option("--dry-run", is_flag=True, help="Say what would be enqueued and skipped (reads the destination's reports; needs no Redis); touch nothing.")
@click.option("--redis-url", envvar="REDIS_URL", default=None)
@click.option("--size", type=click.IntRange(32, MAX_WORKING_SIZE), default=None, help="Working resolution: long side N px.")
@click.option("--square", type=click.IntRange(32, MAX_WORKING_SIZE), default=None, help="Working resolution: N x N.")
@click.option("--native", is_flag=True, help="No resize.")
@click.option("--tile", type=click.IntRange(32, MAX_TILE), default=None, help="Tile side in px.")
@click.option("--overlap", type=click.IntRange(0), default=None, help="Overlap between tiles in px.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True), default=None, help="Dust probability threshold.")
@click.option("--spot-threshold", type=click.FloatRange(0, 1), default=None,
              help="Keep only spots with a pixel at least this probable (default: the model's).")
@click.option("--min-area", type=click.IntRange(1), default=None,
              help="Drop spots smaller than this many native pixels (default: the model's).")
@rule_option("--trim", rule="trim", number=float, default=None,
             help="Narrow spots to the scan's own contrast: this share of the local peak (0: off; default: the model's).")
@rule_option("--neutral", rule="neutral", number=float, default=None,
             help="Drop spots whose colour no dust makes: tolerance in levels of 255 (0: off; default: the model's).")
@click.option("--overlay", is_flag=True, help="Also write <name>.overlay.jpg.")
@click.option("--prob", is_flag=True, help="Also write <name>.prob.png.")
@click.option("--inpaint", is_flag=True, help="Also write <name>.clean.<ext> (spots inpainted).")
@click.option("--max-pixels", type=click.IntRange(1), default=None,
              help="Pixel limit for these scans (default: the worker's, 300 MP).")
def enqueue(source, dest, batch, queue_name, model_ref, force, dry_run, redis_url,
            size, square, native, tile, overlap, threshold, spot_threshold, min_area, trim, neutral, overlay,
            prob, inpaint, max_pixels):
    """Enqueue every scan under SOURCE (folder or s3://bucket/prefix); print the batch id."""
    from dataclasses import asdict

    from producer.enqueue import enqueue as do_enqueue
    from shared.errors import DustspotError
    from shared.jobs import JOB_OPTIONS
    from shared.queues import connect

    opts = build_options(size, square, native, tile, overlap, threshold, overlay, prob, max_pixels, inpaint,
                         spot_threshold, min_area, trim, neutral)
    options = {k: v for k, v in asdict(opts).items() if k in JOB_OPTIONS and v is not None and v is not False}
    started = time.perf_counter()
    try:
        result = do_enqueue(None if dry_run else connect(redis_url), source, dest, batch, queue_name,
                            model_ref, options, force=force, dry_run=dry_run)
    except DustspotError as exc:
        from shared.storage import printable
        raise click.ClickException(printable(str(exc))) from None
    seconds = time.perf_counter() - started
    for name, reason in result.refused:
        click.echo(f"refused {name}: {reason}", err=True)
    click.echo(f"{result.scans} scans: {result.enqueued} {'would be ' if dry_run else ''}enqueued, "
               f"{result.skipped_done} already done, "
               f"{'queue not looked up' if dry_run else f'{result.skipped_in_flight} already queued'}"
               f"{f', {len(result.refused)} refused' if result.refused else ''} "
               f"({seconds:.2f} s)", err=True)
    click.echo(result.batch)

"""`dustspot retry-failed`: put a batch's failed scans back on the queue."""
import click


@click.command("retry-failed")
@click.argument("batch")
@click.option("--redis-url", envvar="REDIS_URL", default=None)
def retry_failed(batch, redis_url):
    """Requeue every failed scan of BATCH."""
    from producer.enqueue import retry_failed as do_retry
    from shared.queues import connect
    count = do_retry(connect(redis_url), batch)
    click.echo(f"{count} failed scans of {batch} requeued")

"""`dustspot status`: where a batch stands (queued / started / done / failed, rate, ETA)."""
import time

import click


def _rate(redis, batch, window=300.0):
    """Scans finished per minute over the last `window` seconds (from rq's ended_at)."""
    from datetime import datetime, timezone

    from shared import batches
    ids = [j for j, s in batches.job_statuses(redis, batch).items() if s == "finished"]
    pipe = redis.pipeline()
    for jid in ids:
        pipe.hget(f"rq:job:{jid}", "ended_at")
    now = datetime.now(timezone.utc).timestamp()
    recent = 0
    for ended in pipe.execute():
        if ended:
            stamp = datetime.fromisoformat(ended.decode().replace("Z", "+00:00"))
            if stamp.tzinfo is None:
                stamp = stamp.replace(tzinfo=timezone.utc)
            recent += now - stamp.timestamp() <= window
    return recent * 60.0 / window


def _line(batch, c, rate):
    remaining = c["total"] - c["finished"] - c["failed"] - c.get("expired", 0)
    eta = f"{remaining / rate:.0f} min" if rate > 0 and remaining else "-"
    expired = f", {c['expired']} ended (record expired)" if c.get("expired") else ""
    return (f"{batch}: {c['total']} scans, {c['queued']} queued, {c['started']} started, "
            f"{c['finished']} done, {c['failed']} failed{expired}; {rate:.1f} scans/min, ETA {eta}")


@click.command("status")
@click.argument("batch", required=False)
@click.option("--watch", is_flag=True, help="Live progress bar until the batch is complete.")
@click.option("--failures", is_flag=True, help="Also list each failed scan with its reason.")
@click.option("--redis-url", envvar="REDIS_URL", default=None)
def status(batch, watch, failures, redis_url):
    """Progress of BATCH (or of every batch when none is named)."""
    from tqdm import tqdm

    from shared import batches
    from shared.queues import connect
    redis = connect(redis_url)
    names = [batch] if batch else sorted(b.decode() for b in redis.smembers(batches.ALL_BATCHES))
    if batch and not batches.info(redis, batch):
        raise click.ClickException(f"no batch {batch!r} in this Redis")
    if not watch:
        for name in names:
            click.echo(_line(name, batches.counts(redis, name), _rate(redis, name)))
            if failures:
                for scan, reason in sorted(redis.hgetall(batches.key(name, "failures")).items()):
                    click.echo(f"  FAILED {scan.decode()}: {reason.decode()}")
        return
    if len(names) != 1:
        raise click.UsageError("--watch needs one BATCH")
    c = batches.counts(redis, batch)
    with tqdm(total=c["total"], unit="scan", desc=batch) as bar:
        while True:
            c = batches.counts(redis, batch)
            bar.n = batches.ended(c)
            bar.set_postfix(done=c["finished"], failed=c["failed"], started=c["started"])
            bar.refresh()
            # Done when every job has ended, or when the batch waits for none (its record of
            # pending scans is what the workers empty; nothing else can be waited for).
            if bar.n >= c["total"] or c["pending"] == 0:
                break
            time.sleep(2)
    click.echo(_line(batch, c, _rate(redis, batch)))

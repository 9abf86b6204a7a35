"""Benchmark: how long `enqueue` takes for a large batch (default 10,000 scans).

    python -m producer.bench [--scans 10000] [--redis-url redis://localhost:6379/15]

The source listing is synthetic (keys passed in, nothing read from disk or S3), so the
figure is the producer's own cost: planning, status lookups and pipelined enqueue into a
real Redis. The batch and its jobs are deleted afterwards.
"""
import argparse
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=10000)
    parser.add_argument("--redis-url", default="redis://localhost:6379/15")
    args = parser.parse_args()
    from producer.enqueue import enqueue
    from shared import batches
    from shared.queues import connect, queue
    redis = connect(args.redis_url)
    keys = [f"roll{i // 36:04d}/frame{i % 36:02d}.tif" for i in range(args.scans)]
    batch = "bench-enqueue"

    started = time.perf_counter()
    dry = enqueue(None, "/bench/src", "/nonexistent/dst", batch, "bench", keys=keys, dry_run=True)
    dry_s = time.perf_counter() - started
    try:
        started = time.perf_counter()
        real = enqueue(redis, "/bench/src", "/nonexistent/dst", batch, "bench", keys=keys)
        real_s = time.perf_counter() - started
        started = time.perf_counter()
        again = enqueue(redis, "/bench/src", "/nonexistent/dst", batch, "bench", keys=keys)
        again_s = time.perf_counter() - started
        assert real.enqueued == args.scans and again.skipped_in_flight == args.scans
        print(f"scans {args.scans}: dry-run {dry_s:.2f} s, enqueue {real_s:.2f} s "
              f"({args.scans / real_s:.0f} jobs/s), re-enqueue (all in flight) {again_s:.2f} s")
    finally:
        queue("bench", redis).empty()
        for suffix in ("", "jobs", "pending", "spots", "failures", "last"):
            redis.delete(batches.key(batch, suffix))
        redis.srem(batches.ALL_BATCHES, batch)
    return dry


if __name__ == "__main__":
    main()

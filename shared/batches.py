"""Batch bookkeeping in Redis, beside rq's own job records.

    dustspot:batches                  set of batch ids
    dustspot:batch:<id>               hash: source, dest, queue, model, created, total
    dustspot:batch:<id>:jobs          set of job ids (all scans of the batch)
    dustspot:batch:<id>:pending       set of job ids not finished or failed yet
    dustspot:batch:<id>:spots         hash: relative name -> spot count (finished scans)
    dustspot:batch:<id>:failures      hash: relative name -> reason (failed scans)
    dustspot:batch:<id>:last          the job id that emptied `pending`

Workers update the last four as jobs end; the worker that empties `pending` writes the
batch summary to the destination. Status is read from rq's job hashes in one pipeline.
"""
import datetime
import json
import time

KEY = "dustspot:batch:{}"
ALL_BATCHES = "dustspot:batches"
SUMMARY_NAME = "dustspot-batch-{}.json"
STATUSES = ("queued", "started", "finished", "failed", "deferred", "scheduled", "stopped", "canceled")


def key(batch: str, part: str = "") -> str:
    return KEY.format(batch) + (":" + part if part else "")


def register(redis, batch: str, info: dict, job_ids: list, new_job_ids: list) -> None:
    pipe = redis.pipeline()
    pipe.sadd(ALL_BATCHES, batch)
    pipe.hset(key(batch), mapping={**info, "created": info.get("created") or _now()})
    if job_ids:
        pipe.sadd(key(batch, "jobs"), *job_ids)
    if new_job_ids:
        pipe.sadd(key(batch, "pending"), *new_job_ids)
    pipe.execute()
    redis.hset(key(batch), "total", redis.scard(key(batch, "jobs")))


# SREM + SCARD + remember who emptied the set, atomically. Answering "was it me?" from the
# `last` key, not from SREM's count, keeps the answer when a retry follows a lost reply (the
# first try already removed the job): the batch summary is still written, and only once.
_END_SCRIPT = """
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local remaining = redis.call('SCARD', KEYS[1])
if remaining > 0 then return 0 end
if removed == 1 then redis.call('SET', KEYS[2], ARGV[1]) return 1 end
if redis.call('GET', KEYS[2]) == ARGV[1] then return 1 end
return 0
"""


def job_ended(redis, batch: str, job_id: str, name: str, spots: int | None, error: str | None) -> bool:
    """Record one scan's outcome; True when it was the batch's last pending scan.

    Safe to repeat (a retry after a lost reply): it answers the same."""
    from .storage import printable
    name = printable(name)
    pipe = redis.pipeline()
    if error is None:
        pipe.hset(key(batch, "spots"), name, spots)
        pipe.hdel(key(batch, "failures"), name)
    else:
        pipe.hset(key(batch, "failures"), name, printable(error))
        pipe.hdel(key(batch, "spots"), name)       # a re-run that failed is not also finished
    pipe.eval(_END_SCRIPT, 2, key(batch, "pending"), key(batch, "last"), job_id)
    return bool(pipe.execute()[-1])


def job_statuses(redis, batch: str) -> dict:
    """job id -> rq status ('missing' when the job record has expired or been deleted)."""
    ids = sorted(redis.smembers(key(batch, "jobs")))
    pipe = redis.pipeline()
    for job_id in ids:
        pipe.hget(f"rq:job:{_text(job_id)}", "status")
    return {_text(i): (_text(s) if s else "missing") for i, s in zip(ids, pipe.execute())}


def counts(redis, batch: str) -> dict:
    """Jobs per status. A job whose rq record is gone (expired a week after it ended) counts as
    "expired" once the batch no longer waits for it, as "queued" while it still does (the
    producer records a batch's jobs just before it puts them on the queue)."""
    statuses = job_statuses(redis, batch)
    pending = {_text(j) for j in redis.smembers(key(batch, "pending"))}
    out = {s: 0 for s in ("queued", "started", "finished", "failed", "expired")}
    for job_id, status in statuses.items():
        if status == "missing":
            status = "queued" if job_id in pending else "expired"
        out[status] = out.get(status, 0) + 1
    out["total"] = len(statuses)
    out["pending"] = len(pending)
    return out


def ended(c: dict) -> int:
    """Jobs of a batch that will not run again (from `counts`)."""
    return c["finished"] + c["failed"] + c["expired"]


def complete(redis, batch: str) -> bool:
    """True when no scan of the batch is waiting to end (the summary has been written)."""
    return redis.scard(key(batch, "pending")) == 0


def info(redis, batch: str) -> dict:
    return {_text(k): _text(v) for k, v in redis.hgetall(key(batch)).items()}


def summary(redis, batch: str) -> dict:
    spots = {_text(k): int(v) for k, v in redis.hgetall(key(batch, "spots")).items()}
    failures = {_text(k): _text(v) for k, v in redis.hgetall(key(batch, "failures")).items()}
    # Counted from the outcomes recorded by the jobs themselves: the job writing this
    # summary is still "started" in rq's eyes.
    total = redis.scard(key(batch, "jobs"))
    tally = {"total": total, "finished": len(spots), "failed": len(failures),
             "pending": redis.scard(key(batch, "pending"))}
    return {"batch": batch, **info(redis, batch), "counts": tally, "written": _now(),
            "failures": failures, "spots_per_scan": spots}


def write_summary(redis, batch: str) -> str:
    from .storage import allowed_roots, check_allowed, open_storage
    report = summary(redis, batch)
    dest = open_storage(report["dest"])
    check_allowed(dest.uri(SUMMARY_NAME.format(batch)), allowed_roots())   # as the scans' outputs
    return dest.write(SUMMARY_NAME.format(batch), json.dumps(report, indent=1).encode())


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _now() -> str:
    return datetime.datetime.fromtimestamp(time.time(), datetime.timezone.utc).isoformat(timespec="seconds")

"""Turning a folder or an S3 prefix into one job per scan, idempotently.

Scans whose outputs are complete in the destination (mask and report) are skipped, as
are scans whose job is still queued or running; --force re-runs everything not in
flight. Jobs go to Redis in pipelined chunks (rq's enqueue_many).
"""
import posixpath
from dataclasses import dataclass, field

from shared import batches, defaults
from shared.jobs import JOB_FUNCTION, JobPayload, check_batch_name, default_batch_name, job_id
from shared.outputs import SUFFIX_MASK, SUFFIX_REPORT
from shared.queues import FAILURE_TTL, JOB_TIMEOUT, RESULT_TTL, queue as make_queue
from shared.storage import open_storage, printable

CHUNK = 1000
IN_FLIGHT = {"queued", "started", "deferred", "scheduled"}


@dataclass
class EnqueueResult:
    batch: str
    scans: int = 0
    enqueued: int = 0
    skipped_done: int = 0
    skipped_in_flight: int = 0
    job_ids: list = field(default_factory=list)


def list_scans(source_root: str) -> list[str]:
    """Relative keys of the image files under a folder or S3 prefix (hidden files skipped)."""
    keys = open_storage(source_root).list()
    return [k for k in keys if k.lower().endswith(defaults.IMAGE_EXTENSIONS)
            and not any(part.startswith(".") for part in k.split("/"))]


def done_stems(dest_root: str) -> set[str]:
    """Stems whose outputs are complete: mask and report both present (report is last)."""
    try:
        keys = set(open_storage(dest_root).list())
    except Exception:
        return set()
    return {k[: -len(SUFFIX_MASK)] for k in keys
            if k.endswith(SUFFIX_MASK) and k[: -len(SUFFIX_MASK)] + SUFFIX_REPORT in keys}


def plan(source_root: str, dest_root: str, batch: str, model: str | None, options: dict,
         keys: list[str] | None = None) -> list[JobPayload]:
    """One payload per scan (keys: the source listing, or None to list it now)."""
    source = open_storage(source_root)
    keys = list_scans(source_root) if keys is None else keys
    return [JobPayload(source=source.uri(k), dest=dest_root, name=k, batch=batch, model=model,
                       options=options) for k in keys]


def enqueue(redis, source_root: str, dest_root: str, batch: str | None = None,
            queue_name: str = "dustspot", model: str | None = None, options: dict | None = None,
            force: bool = False, dry_run: bool = False, keys: list[str] | None = None) -> EnqueueResult:
    batch = check_batch_name(batch) if batch else default_batch_name(source_root, dest_root)
    payloads = plan(source_root, dest_root, batch, model, options or {}, keys)
    result = EnqueueResult(batch, scans=len(payloads))
    done = set() if force or dry_run else done_stems(dest_root)
    ids = [job_id(batch, p.source) for p in payloads]

    statuses = {}
    if not dry_run:
        pipe = redis.pipeline()
        for i in ids:
            pipe.hget(f"rq:job:{i}", "status")
        statuses = dict(zip(ids, (s.decode() if s else None for s in pipe.execute())))

    q = None if dry_run else make_queue(queue_name, redis)
    todo = []
    for payload, jid in zip(payloads, ids):
        if posixpath.splitext(payload.name)[0] in done:
            result.skipped_done += 1
        elif statuses.get(jid) in IN_FLIGHT:
            result.skipped_in_flight += 1
        else:
            todo.append((payload, jid))
    result.job_ids = [jid for _, jid in todo]
    result.enqueued = len(todo)
    if dry_run:
        return result

    batches.register(redis, batch, {"source": source_root, "dest": dest_root, "queue": queue_name,
                                    "model": model or ""}, ids, result.job_ids)
    for start in range(0, len(todo), CHUNK):
        chunk = todo[start:start + CHUNK]
        pipe = redis.pipeline()
        for _, jid in chunk:                         # a finished/failed record is replaced
            pipe.delete(f"rq:job:{jid}")
        pipe.execute()
        datas = [q.prepare_data(JOB_FUNCTION, args=(p.to_dict(),), job_id=jid, timeout=JOB_TIMEOUT,
                                result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, description=printable(p.name))
                 for p, jid in chunk]
        with redis.pipeline() as pipe:
            q.enqueue_many(datas, pipeline=pipe)
            pipe.execute()
    return result


def retry_failed(redis, batch: str) -> int:
    """Requeue the batch's failed jobs; returns how many."""
    from rq.registry import FailedJobRegistry
    info = batches.info(redis, check_batch_name(batch))
    if not info:
        return 0
    q = make_queue(info["queue"], redis)
    registry = FailedJobRegistry(queue=q)
    failed = [jid for jid, status in batches.job_statuses(redis, batch).items() if status == "failed"]
    for jid in failed:
        redis.sadd(batches.key(batch, "pending"), jid)
        registry.requeue(jid)
    return len(failed)

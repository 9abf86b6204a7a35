"""Turning a folder or an S3 prefix into one job per scan, idempotently.

Scans whose outputs are complete in the destination (mask and report) are skipped, as
are scans whose job is still queued or running; --force re-runs everything not in
flight. Jobs go to Redis in pipelined chunks (rq's enqueue_many).
"""
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shared import batches, defaults, registry
from shared.errors import DustspotError, TransientStorageError
from shared.jobs import (
    JOB_FUNCTION,
    JobPayload,
    check_batch_name,
    check_options,
    default_batch_name,
    job_id,
)
from shared.outputs import SUFFIX_MASK, SUFFIX_REPORT, is_output_name
from shared.queues import FAILURE_TTL, JOB_TIMEOUT, RESULT_TTL
from shared.queues import queue as make_queue
from shared.storage import (
    claim_outputs,
    locate,
    open_storage,
    output_stem,
    printable,
    safe_relative,
)

CHUNK = 1000
IN_FLIGHT = {"queued", "started", "deferred", "scheduled"}
REPORT_READERS = 16          # reports read at once when checking which scans are done


@dataclass
class EnqueueResult:
    batch: str
    scans: int = 0
    enqueued: int = 0
    skipped_done: int = 0
    skipped_in_flight: int = 0
    job_ids: list = field(default_factory=list)
    refused: list = field(default_factory=list)     # (printable name, reason): not enqueued


def normalize_root(root: str) -> str:
    """One spelling per place: local paths absolute (workers have their own cwd), S3 as parsed."""
    if root.startswith("s3://"):
        return open_storage(root).root
    path = root[len("file://"):] if root.startswith("file://") else root
    return os.path.abspath(path)


def is_scan(key: str) -> bool:
    """An image that is not hidden and not one of dustspot's own outputs."""
    return (key.lower().endswith(defaults.IMAGE_EXTENSIONS) and not is_output_name(key)
            and not any(part.startswith(".") for part in key.split("/")))


def list_scans(source_root: str) -> list[str]:
    """Relative keys of the image files under a folder or S3 prefix (hidden files skipped)."""
    return [k for k in open_storage(source_root).list() if is_scan(k)]


def find_source(source_root: str) -> tuple[str, list[str]]:
    """(root, keys) for a folder, an S3 prefix, one local file or one S3 object."""
    if not source_root.startswith("s3://"):
        if os.path.isfile(source_root):
            folder, name = os.path.split(source_root)
            if not is_scan(name):
                raise DustspotError(f"{source_root}: not a scan ({', '.join(defaults.IMAGE_EXTENSIONS)})")
            return folder, [name]
        if not os.path.isdir(source_root):
            raise DustspotError(f"{source_root}: no such folder or file")
        return source_root, list_scans(source_root)
    keys = list_scans(source_root)
    if not keys:
        storage, key = locate(source_root)
        if key and is_scan(key) and storage.exists(key):          # one object, not a prefix
            return source_root.rsplit("/", 1)[0], [key.rsplit("/", 1)[-1]]
    return source_root, keys


def done_stems(dest_root: str, stems=None) -> dict[str, str | None]:
    """Stems whose outputs are complete (mask present and a report, written last, saying "ok"),
    each with the input its report names (None in a report without one).

    `stems`: only these are checked (the scans being enqueued), None: all.
    """
    try:
        dest = open_storage(dest_root)
        keys = set(dest.list())
    except TransientStorageError:
        raise                             # an outage is not "nothing done": that would redo it all
    except (DustspotError, OSError):      # no destination yet
        return {}
    candidates = [k[: -len(SUFFIX_MASK)] for k in keys
                  if k.endswith(SUFFIX_MASK) and k[: -len(SUFFIX_MASK)] + SUFFIX_REPORT in keys]
    if stems is not None:
        stems = set(stems)
        candidates = [c for c in candidates if c in stems]

    def made_from(stem):
        """(done, input) from the stem's report."""
        try:
            report = json.loads(dest.read(stem + SUFFIX_REPORT))
            return report.get("status") == "ok", report.get("input")
        except TransientStorageError:
            raise
        except (DustspotError, ValueError, AttributeError):   # unreadable, not JSON: not done
            return False, None

    with ThreadPoolExecutor(REPORT_READERS) as pool:
        return {stem: source for stem, (done, source) in zip(candidates, pool.map(made_from, candidates)) if done}


def plan(source_root: str, dest_root: str, batch: str, model: str | None, options: dict,
         keys: list[str] | None = None, refused: list | None = None) -> list[JobPayload]:
    """One payload per scan (keys: the source listing, or None to list it now).

    A key that cannot name outputs safely (empty part, absolute, `..`) is left out and added
    to `refused` as (name, reason); the others go ahead.
    """
    source = open_storage(source_root)
    keys = list_scans(source_root) if keys is None else keys
    payloads = []
    for k in keys:
        try:
            safe_relative(k)                # refuses names that cannot place outputs safely
            uri = source.uri(k)
        except DustspotError as exc:
            if refused is None:
                raise
            refused.append((printable(k), printable(str(exc))))
            continue
        payloads.append(JobPayload(source=uri, dest=dest_root, name=k, batch=batch, model=model,
                                   options=options))
    return payloads


def enqueue(redis, source_root: str, dest_root: str, batch: str | None = None,
            queue_name: str = "dustspot", model: str | None = None, options: dict | None = None,
            force: bool = False, dry_run: bool = False, keys: list[str] | None = None) -> EnqueueResult:
    source_root, dest_root = normalize_root(source_root), normalize_root(dest_root)
    if model and registry.is_path(model) and not model.startswith("s3://"):
        model = os.path.abspath(model)      # a model folder: the same one for every worker
    batch = check_batch_name(batch) if batch else default_batch_name(source_root, dest_root)
    options = check_options(dict(options or {}))
    if keys is None:
        source_root, keys = find_source(source_root)
    refused = []
    planned = plan(source_root, dest_root, batch, model, options, keys, refused)
    payloads, ids, first, owners = [], [], {}, {}
    for p in planned:                   # two keys, one scan: refused before anything is recorded
        jid = job_id(batch, p.source)
        if jid in first:
            refused.append((printable(p.name), f"same scan as {printable(first[jid])!r} "
                                                    f"({printable(p.source)})"))
            continue
        clash = claim_outputs(owners, p.name, p.source)
        if clash:
            refused.append((printable(p.name), clash))
            continue
        first[jid] = p.name
        payloads.append(p)
        ids.append(jid)
    # a dry run reads too (reports, job statuses where it has a Redis): it must predict the run
    done = done_stems(dest_root, {output_stem(p.name) for p in payloads})
    # Outputs already there from another scan of the same name (roll2/Scan-001.tif into the
    # --out of roll1/Scan-001.tif) are neither "done" nor overwritten, --force or not.
    kept = [(p, jid) for p, jid in zip(payloads, ids)
            if not _made_from_another(done, p, refused)]
    payloads, ids = [p for p, _ in kept], [jid for _, jid in kept]
    if force:
        done = {}
    result = EnqueueResult(batch, scans=len(payloads), refused=refused)

    statuses = {}
    if redis is not None:
        pipe = redis.pipeline()
        for i in ids:
            pipe.hget(f"rq:job:{i}", "status")
        statuses = dict(zip(ids, (s.decode() if s else None for s in pipe.execute())))

    q = None if dry_run else make_queue(queue_name, redis)
    todo = []
    for payload, jid in zip(payloads, ids):
        if output_stem(payload.name) in done:
            result.skipped_done += 1
        elif statuses.get(jid) in IN_FLIGHT:
            result.skipped_in_flight += 1
        else:
            todo.append((payload, jid))
    result.job_ids = [jid for _, jid in todo]
    result.enqueued = len(todo)
    if dry_run:
        return result

    # Only the jobs enqueued now join the batch: a scan skipped as done would never end, and
    # `status --watch` would wait for it forever.
    batches.register(redis, batch, {"source": source_root, "dest": dest_root, "queue": queue_name,
                                    "model": model or ""}, result.job_ids, result.job_ids)
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


def _made_from_another(done: dict, payload: JobPayload, refused: list) -> bool:
    stem = output_stem(payload.name)
    other = done.get(stem)
    if other is None or other == payload.source:
        return False
    reason = (f"not processed: the destination's {stem}.mask.png and {stem}.json are those of another "
              f"scan, {printable(other)}; give it a folder of its own")
    refused.append((printable(payload.name), reason))
    return True


def retry_failed(redis, batch: str) -> int:
    """Requeue the batch's failed jobs, each on the queue it ran on; returns how many.

    A job that is no longer in its failed registry (requeued meanwhile by another run, or its
    record gone) is left out, and the batch does not wait for it."""
    from rq.exceptions import InvalidJobOperation, NoSuchJobError
    from rq.job import Job
    from rq.registry import FailedJobRegistry

    from shared.queues import serializer
    if not batches.info(redis, check_batch_name(batch)):
        return 0
    failed = [jid for jid, status in batches.job_statuses(redis, batch).items() if status == "failed"]
    requeued = 0
    for jid in failed:
        # pending first: a worker that takes and ends the job at once must find it there
        redis.sadd(batches.key(batch, "pending"), jid)
        try:
            job = Job.fetch(jid, connection=redis, serializer=serializer())
            FailedJobRegistry(job.origin, connection=redis, serializer=serializer()).requeue(job)
            requeued += 1
        except (InvalidJobOperation, NoSuchJobError):
            redis.srem(batches.key(batch, "pending"), jid)
    return requeued

"""The rq job function: one scan through the one pipeline, with retries for transient errors.

Permanent errors (a bad scan, a hostile name, a missing key) fail at once with the reason;
transient storage errors (network, throttling, an S3 endpoint that is down for a while)
are retried here with backoff before the job gives up.
"""
import logging
import os
import time

from shared import batches, registry
from shared.errors import DustspotError, TransientStorageError
from shared.jobs import JobPayload, check_batch_name
from shared.pipeline import process_scan
from shared.storage import (
    allowed_roots,
    check_allowed,
    open_storage,
    output_stem,
    printable,
)

from . import sessions

log = logging.getLogger("dustspot.worker")
RETRY_DELAYS = (1, 2, 4, 8, 15, 30)      # ~60 s in all, on top of botocore's own retries
ABANDONED_RETRIES = 3                    # a scan whose worker died is handed out this often
# Redis away when a scan ends: its outputs are written, so wait for Redis (~10 min) rather than
# let rq's own bookkeeping fail after ours and take the worker down (the scan would be redone).
REDIS_WAIT_DELAYS = (1, 2, 4, 8, 15, 30, 30, 60, 60, 60, 60, 60, 60, 60, 60)


class ScanFailed(DustspotError):
    """A failure whose message had to be made printable (a file name that is not UTF-8)."""


def segment_job(payload: dict) -> dict:
    """Run one scan. A failure's message is always printable text: rq stores it in Redis as
    UTF-8, and a message it cannot encode would take the worker down instead of the job."""
    try:
        return _segment(payload)
    except Exception as exc:
        text = str(exc)
        safe = printable(text)
        if safe == text:
            raise
        raise ScanFailed(safe) from None


def _segment(payload: dict) -> dict:
    job = JobPayload.from_dict(payload)
    roots = allowed_roots()
    check_allowed(job.source, roots)
    # the outputs' own location, built as the storage builds it
    check_allowed(open_storage(job.dest).uri(output_stem(job.name)), roots)
    if job.model and registry.is_path(job.model):   # a model folder of its own, not the registry's
        check_allowed(job.model if job.model.startswith("s3://") else os.path.abspath(job.model), roots)
    if sessions.CACHE is None:
        raise RuntimeError("segment_job runs inside `dustspot worker` (no session cache configured)")
    # the model is resolved inside the retries: the registry may be on S3 too
    report = _storage_retries(lambda: process_scan(job.source, job.dest, job.name,
                                                   sessions.CACHE.get(job.model, job.options)), job.name)
    _record_success(job, report["spot_count"])
    return {"name": job.name, "spots": report["spot_count"], "seconds": report["timings"]["total"],
            "model": f"{report['model']['name']}:{report['model']['version']}"}


def _record_success(job: JobPayload, spots: int):
    """Count the scan as done in its batch (failures are counted by record_failure)."""
    from rq import get_current_job
    current = get_current_job()
    if current is None:
        return
    if _until_redis_answers(lambda: batches.job_ended(current.connection, job.batch, current.id,
                                                      job.name, spots, None), job.name):
        _write_summary(current.connection, job.batch)


def _write_summary(redis, batch: str) -> None:
    """The batch summary, retried like a scan's outputs. It is the batch's, not the scan's: a
    summary that cannot be written is logged and leaves the scan done (its outputs are), and
    `dustspot status` still shows the batch's counts and failures."""
    try:
        path = _storage_retries(lambda: batches.write_summary(redis, batch), f"batch {batch} summary")
        log.info("batch %s complete: summary %s", batch, path)
    except Exception as exc:  # noqa: BLE001 (unwritable destination, Redis gone, outside the roots)
        log.error("batch %s: summary not written: %s", batch, printable(str(exc) or type(exc).__name__))


def _storage_retries(action, what: str):
    """Run action, retrying transient storage errors with backoff (RETRY_DELAYS); then give up."""
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            return action()
        except TransientStorageError as exc:
            if delay is None:
                raise
            log.warning("%s: %s; retry %d in %d s", printable(what), exc, attempt + 1, delay)
            time.sleep(delay)


def _until_redis_answers(action, what: str):
    """Run a Redis action, waiting out a Redis outage (REDIS_WAIT_DELAYS); then give up."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    for delay in (*REDIS_WAIT_DELAYS, None):
        try:
            return action()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if delay is None:
                raise
            log.warning("%s: Redis unreachable (%s); retry in %d s", printable(what), exc, delay)
            time.sleep(delay)


def record_failure(job, exc_type, exc_value, traceback) -> bool:
    """rq exception handler: keep the reason on the job and in the batch; continue handling.

    A job abandoned by a dead worker (rq's AbandonedJobError, raised by registry cleanup)
    is not the scan's fault: it gets a retry, which the cleanup then carries out.
    """
    from rq.exceptions import AbandonedJobError, DeserializationError
    reason = printable(str(exc_value) or exc_type.__name__)
    if isinstance(exc_value, DeserializationError):
        log.error("job %s refused: its data is not JSON (a planted or foreign payload; never unpickled)", job.id)
        return True
    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        abandoned = int(job.meta.get("abandoned", 0)) + 1
        job.meta["abandoned"] = abandoned
        job.save_meta()
        if abandoned <= ABANDONED_RETRIES:
            job.retries_left = 1
            log.warning("job %s (%s) was abandoned by its worker: requeued", job.id,
                        printable(job.description or ""))
            return True
        reason = f"abandoned by {abandoned} workers in a row (each died while processing it)"
    try:
        job.meta["error"] = reason
        _until_redis_answers(job.save_meta, job.id)
        # the raw payload, not JobPayload.from_dict: a job the checks refuse still has a batch
        raw = job.args[0] if job.args and isinstance(job.args[0], dict) else {}
        batch, name = raw.get("batch"), str(raw.get("name") or job.id)
        if batch and batches.job_ended(job.connection, check_batch_name(batch), job.id, name, None, reason):
            _write_summary(job.connection, batch)
    except Exception:                 # bookkeeping must never take the worker down
        log.exception("could not record the failure of job %s", job.id)
    return True

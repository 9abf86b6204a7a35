"""The rq job function: one scan through the one pipeline, with retries for transient errors.

Permanent errors (a bad scan, a hostile name, a missing key) fail at once with the reason;
transient storage errors (network, throttling, an S3 endpoint that is down for a while)
are retried here with backoff before the job gives up.
"""
import logging
import time

from shared import batches
from shared.errors import TransientStorageError
from shared.jobs import JobPayload
from shared.pipeline import process_scan
from shared.storage import allowed_roots, check_allowed, output_stem

from . import sessions

log = logging.getLogger("dustspot.worker")
RETRY_DELAYS = (1, 2, 4, 8, 15, 30)      # ~60 s in all, on top of botocore's own retries
ABANDONED_RETRIES = 3                    # a scan whose worker died is handed out this often


def segment_job(payload: dict) -> dict:
    job = JobPayload.from_dict(payload)
    roots = allowed_roots()
    check_allowed(job.source, roots)
    check_allowed(job.dest.rstrip("/") + "/" + output_stem(job.name), roots)
    if sessions.CACHE is None:
        raise RuntimeError("segment_job runs inside `dustspot worker` (no session cache configured)")
    session = sessions.CACHE.get(job.model, job.options)
    for attempt, delay in enumerate((*RETRY_DELAYS, None)):
        try:
            report = process_scan(job.source, job.dest, job.name, session)
            break
        except TransientStorageError as exc:
            if delay is None:
                raise
            log.warning("%s: %s; retry %d in %d s", job.name, exc, attempt + 1, delay)
            time.sleep(delay)
    _record_success(job, report["spot_count"])
    return {"name": job.name, "spots": report["spot_count"], "seconds": report["timings"]["total"],
            "model": f"{report['model']['name']}:{report['model']['version']}"}


def _record_success(job: JobPayload, spots: int):
    """Count the scan as done in its batch (failures are counted by record_failure)."""
    from rq import get_current_job
    current = get_current_job()
    if current is None:
        return
    if batches.job_ended(current.connection, job.batch, current.id, job.name, spots, None):
        path = batches.write_summary(current.connection, job.batch)
        log.info("batch %s complete: summary %s", job.batch, path)


def record_failure(job, exc_type, exc_value, traceback) -> bool:
    """rq exception handler: keep the reason on the job and in the batch; continue handling.

    A job abandoned by a dead worker (rq's AbandonedJobError, raised by registry cleanup)
    is not the scan's fault: it gets a retry, which the cleanup then carries out.
    """
    from rq.exceptions import AbandonedJobError, DeserializationError
    reason = str(exc_value) or exc_type.__name__
    if isinstance(exc_value, DeserializationError):
        log.error("job %s refused: its data is not JSON (a planted or foreign payload; never unpickled)", job.id)
        return True
    if exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError):
        abandoned = int(job.meta.get("abandoned", 0)) + 1
        job.meta["abandoned"] = abandoned
        job.save_meta()
        if abandoned <= ABANDONED_RETRIES:
            job.retries_left = 1
            log.warning("job %s (%s) was abandoned by its worker: requeued", job.id, job.description)
            return True
        reason = f"abandoned by {abandoned} workers in a row (each died while processing it)"
    try:
        job.meta["error"] = reason
        job.save_meta()
        payload = JobPayload.from_dict(job.args[0])
        if batches.job_ended(job.connection, payload.batch, job.id, payload.name, None, reason):
            batches.write_summary(job.connection, payload.batch)
    except Exception:                 # bookkeeping must never take the worker down
        log.exception("could not record the failure of job %s", job.id)
    return True

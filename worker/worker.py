"""The rq worker class: jobs run in this process, next to the compiled model.

rq's SimpleWorker runs each job in the worker's own process (no fork per job, so the
compiled model is reused and nothing compiled crosses a fork). Two things are added:

- A heartbeat thread while a job runs. SimpleWorker otherwise registers a running job for
  its whole timeout (30 min) and never renews it, so a SIGKILLed worker's scan would sit
  "started" for half an hour. Here the lease is HEARTBEAT_TTL seconds, renewed every
  HEARTBEAT_INTERVAL; a dead worker's lease runs out within a minute.
- Frequent maintenance (MAINTENANCE_INTERVAL): idle workers sweep the started registries
  and hand abandoned jobs back to the queue (worker.job.record_failure grants the retry).
  An idle rq worker blocks on the queue for worker_ttl - 15 s between maintenance checks,
  so worker_ttl is set to match.
"""
import signal
import threading

from rq import SimpleWorker

HEARTBEAT_INTERVAL = 10
HEARTBEAT_TTL = 40
MAINTENANCE_INTERVAL = 30


class DustspotWorker(SimpleWorker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        kwargs.setdefault("job_monitoring_interval", HEARTBEAT_INTERVAL)
        kwargs.setdefault("worker_ttl", MAINTENANCE_INTERVAL + 15)
        super().__init__(*args, **kwargs)

    def bootstrap(self, *args, **kwargs):
        # rq installs its SIGTERM/SIGINT handlers only after registering the worker: a stop sent
        # in between (systemctl stop, a scale-down right after a start) killed it outright, left
        # registered. Until rq's handlers are in, a stop is noted and honoured before the first job.
        def stop_before_the_first_job(signum, frame):
            self._stop_requested = True

        signal.signal(signal.SIGTERM, stop_before_the_first_job)
        signal.signal(signal.SIGINT, stop_before_the_first_job)
        super().bootstrap(*args, **kwargs)

    def get_heartbeat_ttl(self, job, working_time: float = 0.0) -> int:
        if job.timeout and job.timeout > 0:
            return int(max(1, min(job.timeout - working_time, HEARTBEAT_TTL)))
        return HEARTBEAT_TTL

    def handle_job_failure(self, job, queue, started_job_registry=None, exc_string="", execution=None):
        # rq stores exc_string as UTF-8: one undecodable file name in a traceback must not stop
        # the worker (and, requeued as abandoned, the next one).
        from shared.storage import printable
        return super().handle_job_failure(job, queue, started_job_registry=started_job_registry,
                                          exc_string=printable(exc_string or ""), execution=execution)

    def execute_job(self, job, queue):
        execution = self.prepare_execution(job)
        done = threading.Event()

        def beat():
            while not done.wait(HEARTBEAT_INTERVAL):
                try:
                    self.maintain_heartbeats(job, execution)
                except Exception:          # a missed beat is not worth the job
                    self.log.warning("heartbeat for job %s failed", job.id, exc_info=True)

        thread = threading.Thread(target=beat, name=f"heartbeat-{job.id}", daemon=True)
        thread.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            done.set()
            thread.join()
        self.set_state("idle")

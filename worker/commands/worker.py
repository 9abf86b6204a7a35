"""`dustspot worker`: an rq worker that holds compiled models and runs scans from the queue."""
import logging

import click

from shared.commands.options import pipeline_options, split_pipeline_kwargs


@click.command("worker")
@click.option("--queue", "queues", multiple=True, default=["dustspot"], show_default=True,
              help="Queue(s) to take jobs from, in priority order.")
@click.option("--redis-url", envvar="REDIS_URL", default=None, help="Redis URL (default: $REDIS_URL or redis://localhost:6379/0).")
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option("--name", default=None, help="Worker name (default: rq's host.pid).")
@click.option("--follow-latest/--pin-model", default=True, show_default=True,
              help="Between jobs, switch to a newly promoted `latest` model.")
@pipeline_options
def worker(queues, redis_url, burst, name, follow_latest, **kwargs):
    """Process scans from the queue with the same pipeline as `dustspot segment`.

    The model is compiled in this process, once, before the first job. Jobs run in this
    process too (no fork per job). SIGTERM finishes the current scan, then exits.
    """
    from shared.errors import DustspotError
    from shared.queues import connect, queue, serializer, wait_for_redis
    from worker import job, sessions
    from worker.worker import DustspotWorker

    # Redis first (cheap): a service waits for it, a burst run fails at once; the model is
    # compiled only once there is a queue to take jobs from.
    connection = connect(redis_url)
    try:
        wait_for_redis(connection, redis_url, wait=not burst, log=logging.getLogger("dustspot.worker"))
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None

    model_ref, registry_root, options, settings = split_pipeline_kwargs(kwargs)
    if settings.pin_threads is None:
        settings.pin_threads = False        # several workers per host: no pile-up on core 0
    cache = sessions.SessionCache(model_ref, registry_root, settings, options, follow_latest)
    try:
        cache.get(None, {})                 # compile now: fail fast, and no slow first job
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    sessions.configure(cache)

    rq_worker = DustspotWorker([queue(q, connection) for q in queues], name=name, connection=connection,
                               serializer=serializer(), exception_handlers=[job.record_failure])
    logging.getLogger("rq.worker").setLevel(logging.INFO)
    rq_worker.work(burst=burst, logging_level="INFO")

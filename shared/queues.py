"""Redis connections and rq queues, always with the JSON serializer.

rq's default serializer is pickle: whoever can write to Redis could run code in a worker.
Every queue, worker and job fetch in dustspot goes through here, with JSON.
"""
from . import defaults

JOB_TIMEOUT = 30 * 60          # seconds one scan may take before rq kills the job
RESULT_TTL = 7 * 24 * 3600     # keep finished jobs a week: re-enqueueing sees them as done
FAILURE_TTL = 30 * 24 * 3600


def connect(url: str | None = None):
    from redis import Redis
    return Redis.from_url(url or defaults.redis_url())


def serializer():
    from rq.serializers import JSONSerializer
    return JSONSerializer


def queue(name: str, connection):
    from rq import Queue
    return Queue(name, connection=connection, serializer=serializer())

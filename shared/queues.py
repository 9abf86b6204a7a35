"""Redis connections and rq queues, always with the JSON serializer.

rq's default serializer is pickle: whoever can write to Redis could run code in a worker.
Every queue, worker and job fetch in dustspot goes through here, with JSON.
"""
import time

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


def redacted(url: str | None) -> str:
    """The Redis URL without its password, for messages and logs."""
    import re
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url or defaults.redis_url())


def wait_for_redis(connection, url: str | None, wait: bool, log=None) -> None:
    """Return once Redis answers a PING. wait=False: a DustspotError at once if it does not;
    wait=True (a long-running worker): retry with backoff up to 30 s between tries, forever."""
    from redis.exceptions import RedisError

    from .errors import DustspotError
    delay = 1
    while True:
        try:
            connection.ping()
            return
        except RedisError as exc:
            if not wait:
                raise DustspotError(f"cannot reach Redis at {redacted(url)}: {exc}") from None
            if log:
                log.warning("waiting for Redis at %s (%s); next try in %d s", redacted(url), exc, delay)
            time.sleep(delay)
            delay = min(30, delay * 2)

"""Faults with real processes: a worker SIGKILLed mid-scan, an unwritable destination,
a pickled job planted in Redis, scans outside the allowed roots."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import textured
from tests.ovmodels import conv_model, publish_model
from tests.scans import write
from tests.services import redis_server, redis_url  # noqa: F401 (fixtures)


def start_worker(env, *flags):
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--threads", "1", *flags],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def cli(args, env):
    res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def job_status(redis, batch, src):
    from shared.jobs import job_id
    value = redis.hget(f"rq:job:{job_id(batch, src)}", "status")
    return value.decode() if value else None


@pytest.fixture
def env(redis_url, tmp_path):
    root = str(tmp_path / "registry")
    # Slow on purpose (about a second per tile): a worker can be killed in the middle of a scan.
    publish_model(conv_model(layers=5, width=48), root, "slow")
    return {**os.environ, "REDIS_URL": redis_url, "DUSTSPOT_MODELS": root}


def worker_busy_with_a_big_scan(tmp_path, env, *more_scans):
    """Enqueue a slow scan (+ others), start a worker, return once it is in the middle of it."""
    from redis import Redis
    redis = Redis.from_url(env["REDIS_URL"])
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "big.png", textured(2400, 2400, seed=9))
    for i, name in enumerate(more_scans):
        write(src / name, textured(100, 100, seed=10 + i))
    batch = cli(["enqueue", str(src), "--out", str(dst), "--model", "slow", "--native", "--tile", "256"],
                env).stdout.strip()
    worker = start_worker(env, "--model", "slow")
    deadline = time.time() + 120
    while job_status(redis, batch, str(src / "big.png")) != "started" and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)
    assert not (dst / "big.mask.png").exists(), "the scan finished already: the model is too fast"
    return redis, src, dst, batch, worker


def test_sigkilled_worker_scan_is_finished_by_another_worker(tmp_path, env):
    redis, src, dst, batch, first = worker_busy_with_a_big_scan(tmp_path, env)
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    killed_at = time.time()

    second = start_worker(env, "--model", "slow")
    try:
        while not (dst / "big.json").exists() and time.time() < killed_at + 120:
            time.sleep(0.5)
        assert (dst / "big.json").exists(), "nobody finished the abandoned scan within 2 minutes"
    finally:
        second.send_signal(signal.SIGTERM)
        log = second.communicate(timeout=60)[0]
    report = json.loads((dst / "big.json").read_text())
    assert report["status"] == "ok" and report["size"] == {"width": 2400, "height": 2400}
    finals = sorted(p.name for p in dst.iterdir() if not p.name.startswith("."))
    assert finals == ["big.json", "big.mask.png", f"dustspot-batch-{batch}.json"]
    summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
    assert summary["counts"]["finished"] == 1 and summary["failures"] == {}
    assert "abandoned" in log


def test_pickled_job_planted_in_redis_is_never_unpickled(tmp_path, env):
    """rq's default serializer would run this payload; dustspot's JSON-only worker must not."""
    import zlib

    from redis import Redis
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    redis = Redis.from_url(env["REDIS_URL"])
    data = zlib.compress(pickle.dumps(("os.system", None, (Exploit(),), {})))
    redis.hset("rq:job:evil", mapping={"data": data, "status": "queued", "origin": "dustspot",
                                       "created_at": "2026-01-01T00:00:00.000000Z",
                                       "enqueued_at": "2026-01-01T00:00:00.000000Z", "timeout": 60})
    redis.rpush("rq:queue:dustspot", "evil")
    redis.sadd("rq:queues", "rq:queue:dustspot")
    src = tmp_path / "src"
    src.mkdir()
    write(src / "good.png", textured(80, 80))
    cli(["enqueue", str(src), "--out", str(tmp_path / "dst"), "--model", "slow", "--size", "64", "--tile", "64", "--overlap", "16"], env)
    worker = start_worker(env, "--model", "slow", "--burst")
    log = worker.communicate(timeout=300)[0]
    assert not marker.exists()
    assert worker.returncode == 0, log[-2000:]
    assert (tmp_path / "dst" / "good.mask.png").exists(), log[-3000:]      # the worker went on
    assert redis.hget("rq:job:evil", "status") == b"failed"
    assert "not JSON" in log


def test_unwritable_destination_fails_the_job_with_the_reason(tmp_path, env):
    from redis import Redis
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "a.png", textured(80, 80))
    # A file where the output folder should be: unwritable even for root (who ignores modes).
    dst.write_bytes(b"not a folder")
    batch = cli(["enqueue", str(src), "--out", str(dst), "--model", "slow", "--size", "64", "--tile", "64", "--overlap", "16"],
                env).stdout.strip()
    worker = start_worker(env, "--model", "slow", "--burst")
    log = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, log[-2000:]
    redis = Redis.from_url(env["REDIS_URL"])
    assert job_status(redis, batch, str(src / "a.png")) == "failed"
    from rq.job import Job

    from shared.jobs import job_id
    from shared.queues import serializer
    job = Job.fetch(job_id(batch, str(src / "a.png")), connection=redis, serializer=serializer())
    assert "cannot write" in job.meta["error"] and str(dst) in job.meta["error"]
    assert dst.read_bytes() == b"not a folder"
    assert [p for p in tmp_path.rglob("*.part")] == []


@pytest.mark.parametrize("case", ["outside", "symlink"])
def test_worker_refuses_paths_outside_the_allowed_roots(tmp_path, env, case):
    from redis import Redis
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "src").mkdir(parents=True)
    outside.mkdir()
    secret = write(outside / "secret.png", textured(80, 80))
    if case == "symlink":
        os.symlink(secret, allowed / "src" / "link.png")
        src, name = allowed / "src", "link.png"
    else:
        src, name = outside, "secret.png"
    env = {**env, "DUSTSPOT_ALLOWED_ROOTS": str(allowed)}
    batch = cli(["enqueue", str(src), "--out", str(allowed / "dst"), "--model", "slow", "--size", "64",
                 "--tile", "64", "--overlap", "16"], env).stdout.strip()
    log = start_worker(env, "--model", "slow", "--burst").communicate(timeout=300)[0]
    redis = Redis.from_url(env["REDIS_URL"])
    assert job_status(redis, batch, str(src / name)) == "failed", log[-2000:]
    summary = json.loads((allowed / "dst" / f"dustspot-batch-{batch}.json").read_text()) if (allowed / "dst").exists() else None
    assert not (allowed / "dst" / (name[:-4] + ".mask.png")).exists()
    if summary:
        assert "outside the allowed roots" in summary["failures"][name]


def test_sigterm_finishes_the_current_scan_then_exits(tmp_path, env):
    redis, src, dst, batch, worker = worker_busy_with_a_big_scan(tmp_path, env, "next.png")
    worker.send_signal(signal.SIGTERM)
    log = worker.communicate(timeout=300)[0]
    assert worker.returncode == 0, log[-2000:]
    assert json.loads((dst / "big.json").read_text())["status"] == "ok"      # finished, not cut off
    assert job_status(redis, batch, str(src / "big.png")) == "finished"
    assert job_status(redis, batch, str(src / "next.png")) == "queued"       # left for the others

"""Services failing under a running batch: Redis restarted (data lost), S3 down for 30 s,
Redis with a password."""
import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import textured
from tests.scans import write
from tests.services import PausableProxy, RedisProcess, s3_endpoint  # noqa: F401 (fixture)

FLAGS = ["--model", "conv", "--size", "128", "--tile", "64", "--overlap", "16"]


def cli(args, env):
    res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


def worker(env, *extra):
    return subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--threads", "1", *FLAGS, *extra],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def test_redis_restart_with_data_lost_then_enqueue_resumes(tmp_path, registry_root):
    redis = RedisProcess(tmp_path / "redis").start()
    env = {**os.environ, "REDIS_URL": redis.url, "DUSTSPOT_MODELS": registry_root}
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    for i in range(12):
        write(src / f"s{i:02d}.png", textured(300, 300, seed=i))
    batch = cli(["enqueue", str(src), "--out", str(dst)], env).stdout.strip()
    first = worker(env, "--burst")
    try:
        wait_for(lambda: len(list(dst.glob("*.json"))) >= 3, 120, "three scans done")
        redis.stop()                               # Redis dies mid-batch ...
        first.send_signal(signal.SIGKILL)           # ... and so does the worker
        first.communicate(timeout=30)
        redis.start()                               # back, empty: the queue is gone
        done_before = {p.name: p.stat().st_mtime_ns for p in dst.glob("*.mask.png")
                       if (dst / p.name.replace(".mask.png", ".json")).exists()}
        res = cli(["enqueue", str(src), "--out", str(dst)], env)
        assert res.stdout.strip() == batch
        assert f"{12 - len(done_before)} enqueued, {len(done_before)} already done" in res.stderr
        log = worker(env, "--burst").communicate(timeout=300)[0]
        assert len(list(dst.glob("*.mask.png"))) == 12, log[-2000:]
        for name, mtime in done_before.items():     # nothing done was recomputed
            assert (dst / name).stat().st_mtime_ns == mtime
    finally:
        redis.stop()


def test_s3_down_for_30_seconds_mid_batch(tmp_path, registry_root, s3_endpoint):
    import boto3
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="outage-src")
    s3.create_bucket(Bucket="outage-dst")
    for i in range(8):
        path = write(tmp_path / f"s{i}.png", textured(200, 200, seed=i))
        s3.upload_file(path, "outage-src", f"scans/s{i}.png")
    redis = RedisProcess(tmp_path / "redis").start()
    proxy = PausableProxy(int(s3_endpoint.rsplit(":", 1)[1]))
    env = {**os.environ, "REDIS_URL": redis.url, "DUSTSPOT_MODELS": registry_root,
           "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}
    try:
        batch = cli(["enqueue", "s3://outage-src/scans", "--out", "s3://outage-dst/masks"], env).stdout.strip()
        proxy.set_down(True)                                  # S3 goes away before the workers start
        threading.Timer(30, proxy.set_down, (False,)).start()
        started = time.time()
        log = worker(env, "--burst").communicate(timeout=400)[0]
        assert time.time() - started >= 25                      # it really waited the outage out
        keys = s3.list_objects_v2(Bucket="outage-dst", Prefix="masks/").get("Contents", [])
        names = sorted(k["Key"] for k in keys)
        assert [n for n in names if n.endswith(".mask.png")] == [f"masks/s{i}.mask.png" for i in range(8)], log[-3000:]
        assert f"masks/dustspot-batch-{batch}.json" in names
        assert "retry" in log
    finally:
        proxy.set_down(False)
        redis.stop()


def test_redis_with_a_password(tmp_path, registry_root):
    redis = RedisProcess(tmp_path / "redis", password="p4ss-w0rd").start()
    env = {**os.environ, "REDIS_URL": redis.url, "DUSTSPOT_MODELS": registry_root}
    try:
        src = tmp_path / "src"
        src.mkdir()
        write(src / "a.png", textured(100, 100))
        batch = cli(["enqueue", str(src), "--out", str(tmp_path / "dst")], env).stdout.strip()
        log = worker(env, "--burst").communicate(timeout=300)[0]
        assert (tmp_path / "dst" / "a.mask.png").exists(), log[-2000:]
        assert "p4ss-w0rd" not in log                           # no secret in the logs
        assert "1 done" in cli(["status", batch], env).stdout
        wrong = {**env, "REDIS_URL": redis.url.replace("p4ss-w0rd", "wrong")}
        res = subprocess.run([sys.executable, "-m", "shared.cli", "status", batch], capture_output=True,
                             text=True, env=wrong, timeout=60)
        assert res.returncode != 0
    finally:
        redis.stop()


def test_redis_away_when_a_scan_ends_the_worker_waits_and_records_it(tmp_path, registry_root):
    # The scan's outputs are written while Redis is unreachable: the worker must wait for Redis
    # to record the end (its own bookkeeping, then rq's), not die and leave the job "started".
    from redis import Redis
    redis = RedisProcess(tmp_path / "redis").start()
    proxy = PausableProxy(redis.port)
    env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0", "DUSTSPOT_MODELS": registry_root}
    direct = Redis.from_url(redis.url)
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    write(src / "big.png", textured(3000, 3000, seed=1))
    try:
        batch = cli(["enqueue", str(src), "--out", str(dst)], env).stdout.strip()
        proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--burst", "--threads", "1",
                                 "--model", "conv", "--native", "--tile", "256", "--overlap", "16"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.time() + 120
        while not direct.zcard("rq:wip:dustspot") and time.time() < deadline:   # the scan has started
            time.sleep(0.05)
        assert direct.zcard("rq:wip:dustspot"), "the job never started"
        proxy.set_down(True)
        while not (dst / "big.json").exists() and time.time() < deadline:      # ... and ended, Redis away
            time.sleep(0.1)
        assert (dst / "big.json").exists(), "the scan did not finish"
        time.sleep(3)
        proxy.set_down(False)
        log = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, log[-3000:]
        assert "Redis unreachable" in log
        from shared.batches import counts
        assert counts(direct, batch)["finished"] == 1, log[-3000:]
        assert (dst / f"dustspot-batch-{batch}.json").exists()
    finally:
        proxy.set_down(False)
        redis.stop()


def test_a_worker_started_while_redis_is_away(tmp_path, registry_root):
    from redis import Redis
    redis = RedisProcess(tmp_path / "redis", password="pw-123").start()
    proxy = PausableProxy(redis.port)
    url = f"redis://:pw-123@127.0.0.1:{proxy.port}/0"
    env = {**os.environ, "REDIS_URL": url, "DUSTSPOT_MODELS": registry_root}
    try:
        proxy.set_down(True)
        # a burst run fails at once with a clear message (no traceback, no password)
        res = subprocess.run([sys.executable, "-m", "shared.cli", "worker", "--burst", *FLAGS], env=env,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 1 and "cannot reach Redis at redis://:***@127.0.0.1" in res.stderr
        assert "Traceback" not in res.stderr and "pw-123" not in res.stderr
        # a service waits for Redis, then works
        proc = worker(env)
        time.sleep(4)
        assert proc.poll() is None                          # still waiting, not dead
        proxy.set_down(False)
        src, dst = tmp_path / "src", tmp_path / "dst"
        src.mkdir()
        write(src / "a.png", textured(100, 100, seed=1))
        batch = cli(["enqueue", str(src), "--out", str(dst)], env).stdout.strip()
        deadline = time.time() + 120
        while not (dst / f"dustspot-batch-{batch}.json").exists() and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        log = proc.communicate(timeout=60)[0]
        assert (dst / "a.mask.png").exists(), log[-3000:]
        assert "waiting for Redis at redis://:***@" in log and "pw-123" not in log
        assert Redis.from_url(redis.url).ping()
    finally:
        proxy.set_down(False)
        redis.stop()

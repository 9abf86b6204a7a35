"""The batch system with real services: redis-server, moto's S3 server, real worker processes."""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import textured
from tests.scans import write, write_truncated_jpeg
from tests.services import redis_server, redis_url, s3_endpoint  # noqa: F401 (fixtures)

FLAGS = ["--model", "conv", "--size", "256", "--tile", "128", "--overlap", "32", "--precision", "f32"]


def cli(args, env, check=True, timeout=300):
    res = subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                         env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture
def env(redis_url, registry_root):
    return {**os.environ, "REDIS_URL": redis_url, "DUSTSPOT_MODELS": registry_root}


def run_workers(env, count=2, queue="dustspot"):
    procs = [subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--burst", "--queue", queue,
                               "--threads", "1", *FLAGS], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(count)]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-3000:]
    return logs


def make_scans(folder, count, corrupt=()):
    os.makedirs(folder / "roll", exist_ok=True)
    names = []
    for i in range(count):
        name = f"roll/s{i:02d}.png" if i % 2 else f"s{i:02d}.jpg"
        if i in corrupt:
            write_truncated_jpeg(folder / name, textured(200, 200, seed=i))
        else:
            write(folder / name, textured(90 + i, 120, seed=i))
        names.append(name)
    return names


def enqueue(env, src, dst, *extra):
    res = cli(["enqueue", str(src), "--out", str(dst), *extra], env)
    return res.stdout.strip(), res.stderr


def test_folder_batch_with_two_workers_matches_segment(tmp_path, env):
    src, dst, ref = tmp_path / "src", tmp_path / "dst", tmp_path / "ref"
    names = make_scans(src, 20)
    batch, log = enqueue(env, src, dst)
    assert "20 enqueued" in log
    run_workers(env)
    cli(["segment", str(src), "--out", str(ref), "-q", *FLAGS], env)
    for name in names:
        stem = os.path.splitext(name)[0]
        got = cv2.imread(str(dst / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        want = cv2.imread(str(ref / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, want)
        report = json.loads((dst / f"{stem}.json").read_text())
        assert report["status"] == "ok" and report["spot_count"] == json.loads((ref / f"{stem}.json").read_text())["spot_count"]
    outputs = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert len([o for o in outputs if o.endswith(".mask.png")]) == 20
    assert not [o for o in outputs if ".part" in o]
    status = cli(["status", batch], env).stdout
    assert "20 scans" in status and "20 done" in status and "0 failed" in status
    summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
    assert summary["counts"]["finished"] == 20 and len(summary["spots_per_scan"]) == 20


def test_reenqueue_skips_done_and_force_recomputes(tmp_path, env):
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_scans(src, 4)
    batch, _ = enqueue(env, src, dst)
    run_workers(env, count=1)
    mtimes = {p: p.stat().st_mtime_ns for p in dst.rglob("*.mask.png")}
    again, log = enqueue(env, src, dst)
    assert again == batch and "0 enqueued, 4 already done" in log
    run_workers(env, count=1)
    assert {p: p.stat().st_mtime_ns for p in dst.rglob("*.mask.png")} == mtimes
    _, log = enqueue(env, src, dst, "--force")
    assert "4 enqueued" in log
    run_workers(env, count=1)
    assert all(p.stat().st_mtime_ns != mtimes[p] for p in mtimes)


def test_job_data_in_redis_is_json_not_pickle(tmp_path, env):
    from redis import Redis
    src = tmp_path / "src"
    make_scans(src, 2)
    batch, _ = enqueue(env, src, tmp_path / "dst")
    redis = Redis.from_url(env["REDIS_URL"])
    job_keys = [k for k in redis.keys("rq:job:*") if redis.type(k) == b"hash"]
    assert len(job_keys) == 2
    for k in job_keys:
        data = redis.hget(k, "data")
        import zlib
        raw = zlib.decompress(data) if data[:1] == b"\x78" else data
        decoded = json.loads(raw)                     # JSON, not a pickle stream
        assert decoded[0] == "worker.job.segment_job"
        assert decoded[2][0]["batch"] == batch and decoded[2][0]["source"].startswith(str(src))


def test_corrupt_scan_fails_with_reason_others_finish_and_retry(tmp_path, env):
    src, dst = tmp_path / "src", tmp_path / "dst"
    names = make_scans(src, 20, corrupt={6})
    batch, _ = enqueue(env, src, dst)
    run_workers(env)
    status = cli(["status", batch, "--failures"], env).stdout
    assert "19 done" in status and "1 failed" in status
    assert f"FAILED {names[6]}: " in status and "truncated JPEG" in status
    summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
    assert list(summary["failures"]) == [names[6]]
    assert "truncated JPEG" in summary["failures"][names[6]]
    from redis import Redis
    from rq.job import Job

    from shared.queues import serializer
    redis = Redis.from_url(env["REDIS_URL"])
    from shared.jobs import job_id
    failed = Job.fetch(job_id(batch, str(src / names[6])), connection=redis, serializer=serializer())
    assert failed.get_status() == "failed" and "truncated JPEG" in failed.meta["error"]
    # the operator replaces the broken file, then retries
    write(src / names[6], textured(100, 100, seed=6))
    assert "1 failed scans" in cli(["retry-failed", batch], env).stdout
    run_workers(env, count=1)
    assert "20 done" in cli(["status", batch], env).stdout
    assert (dst / (os.path.splitext(names[6])[0] + ".mask.png")).exists()


def test_s3_source_and_destination(tmp_path, env, s3_endpoint):
    import boto3
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="scans")
    s3.create_bucket(Bucket="results")
    src = tmp_path / "src"
    names = make_scans(src, 20)
    for name in names:
        s3.upload_file(str(src / name), "scans", f"archive/{name}")
    env = {**env, **{k: os.environ[k] for k in os.environ if k.startswith("AWS_")}}
    batch, log = enqueue(env, "s3://scans/archive", "s3://results/masks")
    assert "20 enqueued" in log
    run_workers(env)
    ref = tmp_path / "ref"
    cli(["segment", str(src), "--out", str(ref), "-q", *FLAGS], env)
    for name in names:
        stem = os.path.splitext(name)[0]
        body = s3.get_object(Bucket="results", Key=f"masks/{stem}.mask.png")["Body"].read()
        got = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(got, cv2.imread(str(ref / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED))
        report = json.loads(s3.get_object(Bucket="results", Key=f"masks/{stem}.json")["Body"].read())
        assert report["status"] == "ok" and report["input"] == f"s3://scans/archive/{name}"
    _, log = enqueue(env, "s3://scans/archive", "s3://results/masks")
    assert "0 enqueued, 20 already done" in log


def test_dashboard_shows_the_queue_behind_basic_auth(tmp_path, env):
    import base64
    import urllib.error
    import urllib.request

    from tests.services import free_port, wait_for_port
    src = tmp_path / "src"
    make_scans(src, 3)
    enqueue(env, src, tmp_path / "dst")
    port = free_port()
    dash_env = {**env, "RQ_DASHBOARD_USERNAME": "ops", "RQ_DASHBOARD_PASSWORD": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "dashboard", "--port", str(port)],
                            env=dash_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, proc, "rq-dashboard")
        url = f"http://127.0.0.1:{port}/0/data/queues.json"
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url, timeout=10)
        assert denied.value.code == 401
        auth = base64.b64encode(b"ops:s3cret").decode()
        request = urllib.request.Request(url, headers={"Authorization": f"Basic {auth}"})
        queues = json.loads(urllib.request.urlopen(request, timeout=10).read())
        assert {"name": "dustspot", "count": 3} in [{"name": q["name"], "count": q["count"]} for q in queues["queues"]]
        page = urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/0/view/queues",
                                                             headers={"Authorization": f"Basic {auth}"}), timeout=10)
        assert page.status == 200 and b"<html" in page.read().lower()
        # the Redis URL (it may carry a password) is not in the argv that `ps` shows
        cmdline = open(f"/proc/{proc.pid}/cmdline", "rb").read()
        assert b"rq-dashboard" in cmdline and b"redis://" not in cmdline, cmdline
    finally:
        proc.terminate()
        proc.wait(10)


def test_dashboard_refuses_to_start_without_credentials(env):
    env = {k: v for k, v in env.items() if not k.startswith("RQ_DASHBOARD_")}
    res = cli(["dashboard", "--port", "1"], env, check=False)
    assert res.returncode != 0 and "RQ_DASHBOARD_USERNAME" in res.stderr


def test_procfile_fleet_with_honcho(tmp_path, env):
    """The Procfile as an operator runs it: `python -m worker.fleet start worker -c worker=2`
    (honcho, with a stop grace long enough for a scan instead of honcho's 5 s)."""
    import signal
    import time

    import honcho.manager

    from shared import defaults
    from worker import fleet
    fleet.configure()
    assert honcho.manager.KILL_WAIT == defaults.WORKER_STOP_GRACE_S >= 300
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    src, dst = tmp_path / "src", tmp_path / "dst"
    make_scans(src, 6)
    batch, _ = enqueue(env, src, dst)
    bin_dir = os.path.dirname(sys.executable)
    fleet_env = {**env, "PATH": bin_dir + os.pathsep + env.get("PATH", ""), "DUSTSPOT_MODEL": "conv"}
    honcho = subprocess.Popen([sys.executable, "-m", "worker.fleet", "-f", os.path.join(repo, "Procfile"),
                               "start", "worker", "-c", "worker=2"], env=fleet_env, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not (dst / f"dustspot-batch-{batch}.json").exists():
            time.sleep(1)
        summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
        assert summary["counts"]["finished"] == 6
    finally:
        os.killpg(honcho.pid, signal.SIGTERM)
        log = honcho.communicate(timeout=60)[0]
    assert "worker.1" in log and "worker.2" in log


def test_running_worker_picks_up_a_promoted_model_between_jobs(tmp_path, env):
    import signal
    import time

    from tests.ovmodels import conv_model, publish_model
    root = tmp_path / "registry"
    publish_model(conv_model(seed=1), str(root), "rolling", "1")
    env = {**env, "DUSTSPOT_MODELS": str(root)}
    flags = [f for f in FLAGS if f != "conv"]
    flags[flags.index("--model") + 1:flags.index("--model") + 1] = ["rolling"]
    worker = subprocess.Popen([sys.executable, "-m", "shared.cli", "worker", "--threads", "1", *flags],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def process(name):
        folder = tmp_path / name
        make_scans(folder, 1)
        enqueue(env, folder, tmp_path / f"out-{name}")
        report = tmp_path / f"out-{name}" / "s00.json"
        deadline = time.time() + 120
        while not report.exists() and time.time() < deadline:
            time.sleep(0.2)
        return json.loads(report.read_text())["model"]["version"]

    try:
        assert process("first") == "1"
        publish_model(conv_model(seed=2), str(root), "rolling", "2")      # publish + promote
        assert process("second") == "2"
    finally:
        worker.send_signal(signal.SIGTERM)                                  # idle: exits at once
        log = worker.communicate(timeout=60)[0]
    assert worker.returncode == 0, log[-2000:]

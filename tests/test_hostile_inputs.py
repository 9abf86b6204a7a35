"""A batch of broken and hostile scans beside good ones, through the real queue and worker.

Every bad scan fails with a clear reason naming it (in its job and in the batch summary),
every odd-but-valid scan is processed at its displayed size, the worker stays up and all
the good scans complete.
"""
import json
import os
import subprocess
import sys

import cv2
import numpy as np
from PIL import Image

from tests.conftest import textured
from tests.scans import (
    write,
    write_png_claiming,
    write_truncated_jpeg,
    write_with_orientation,
)
from tests.services import redis_server, redis_url, s3_endpoint  # noqa: F401,F811 (fixtures)

FLAGS = ["--model", "conv", "--size", "256", "--tile", "128", "--overlap", "32"]


def build(folder, outside):
    """Write every kind; returns {name: expected} with ('fail', reason) or ('ok', (h, w))."""
    kinds = {}
    rgb = textured(120, 160, seed=1)
    write(folder / "good1.jpg", rgb); kinds["good1.jpg"] = ("ok", (120, 160))
    write(folder / "good2.png", textured(90, 70, seed=2)); kinds["good2.png"] = ("ok", (90, 70))
    write_truncated_jpeg(folder / "truncated.jpg", textured(300, 300)); kinds["truncated.jpg"] = ("fail", "truncated JPEG")
    (folder / "zero.jpg").write_bytes(b""); kinds["zero.jpg"] = ("fail", "empty file")
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(4096)); kinds["random.jpg"] = ("fail", "not an image")
    (folder / "page.jpg").write_text("<html><body>404</body></html>"); kinds["page.jpg"] = ("fail", "not an image")
    (folder / "notes.tif").write_text("plain text"); kinds["notes.tif"] = ("fail", "not an image")
    write(folder / "one.png", np.full((1, 1, 3), 200, np.uint8)); kinds["one.png"] = ("ok", (1, 1))
    write_png_claiming(folder / "bomb.png", 100000, 100000); kinds["bomb.png"] = ("fail", "pixel limit")
    cv2.imwrite(str(folder / "float.tif"), np.random.rand(50, 60).astype(np.float32)); kinds["float.tif"] = ("fail", "unsupported sample type")
    Image.fromarray(rgb).save(folder / "pages.tif", save_all=True, append_images=[Image.fromarray(rgb[::-1])])
    kinds["pages.tif"] = ("ok", (120, 160))
    Image.fromarray(rgb).convert("P").save(folder / "palette.png"); kinds["palette.png"] = ("ok", (120, 160))
    frames = [Image.fromarray(textured(40, 50, seed=i)) for i in range(3)]
    frames[0].save(folder / "animated.png", format="GIF", save_all=True, append_images=frames[1:])
    kinds["animated.png"] = ("fail", "unsupported format GIF")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg"); kinds["cmyk.jpg"] = ("ok", (120, 160))
    write_with_orientation(folder / "rotated.jpg", rgb, 6); kinds["rotated.jpg"] = ("ok", (160, 120))
    write(folder / "aspect.png", textured(8, 20000, seed=3)); kinds["aspect.png"] = ("ok", (8, 20000))
    Image.fromarray(np.dstack([rgb[:, :, 0], rgb[:, :, 1]]), "LA").save(folder / "gray_alpha.png")
    kinds["gray_alpha.png"] = ("ok", (120, 160))
    Image.fromarray(rgb).save(folder / "bitmap.jpg", format="BMP"); kinds["bitmap.jpg"] = ("fail", "unsupported format BMP")
    ok, buf = cv2.imencode(".png", textured(200, 200, seed=4))
    data = bytearray(buf.tobytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64          # damage the compressed pixels
    (folder / "corrupt.png").write_bytes(bytes(data)); kinds["corrupt.png"] = ("fail", "corrupt")
    ok, buf = cv2.imencode(".jpg", rgb)
    (folder / "trailer.jpg").write_bytes(buf.tobytes() + b"camera trailer"); kinds["trailer.jpg"] = ("ok", (120, 160))
    name = os.fsdecode(b"latin1-\xe9t\xe9.png")                       # not valid UTF-8
    ok, buf = cv2.imencode(".png", textured(50, 50, seed=5))
    (folder / name).write_bytes(buf.tobytes()); kinds[name] = ("ok", (50, 50))
    secret = write(outside / "secret.png", textured(60, 60))
    os.symlink(secret, folder / "link.png"); kinds["link.png"] = ("fail", "outside the allowed roots")
    write(folder / "deep16.tif", textured(70, 80, dtype=np.uint16)); kinds["deep16.tif"] = ("ok", (70, 80))
    return kinds


def test_hostile_and_broken_scans_in_one_batch(tmp_path, redis_url, registry_root):
    from redis import Redis
    from rq.job import Job

    from shared.jobs import JobPayload, job_id
    from shared.queues import queue, serializer
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    src, dst = allowed / "src", allowed / "dst"
    src.mkdir(parents=True)
    outside.mkdir()
    kinds = build(src, outside)
    env = {**os.environ, "REDIS_URL": redis_url, "DUSTSPOT_MODELS": registry_root,
           "DUSTSPOT_ALLOWED_ROOTS": str(allowed)}
    res = subprocess.run([sys.executable, "-m", "shared.cli", "enqueue", str(src), "--out", str(dst)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    batch = res.stdout.strip()
    # A planted job whose relative name climbs out of the destination.
    redis = Redis.from_url(redis_url)
    evil = JobPayload(source=str(src / "good1.jpg"), dest=str(dst), name="../../escape.jpg", batch=batch)
    queue("dustspot", redis).enqueue("worker.job.segment_job", evil.to_dict(), job_id="planted-escape")
    # A planted job that names a model folder of its own, outside the allowed roots.
    model_dir = os.path.join(registry_root, "conv", "1")
    assert os.path.isfile(os.path.join(model_dir, "model.xml"))
    foreign = JobPayload(source=str(src / "good1.jpg"), dest=str(dst), name="foreign-model.jpg",
                         batch=batch, model=model_dir)
    queue("dustspot", redis).enqueue("worker.job.segment_job", foreign.to_dict(), job_id="planted-model")
    # A planted job with an empty destination: the worker's own folder would be the root, and
    # a name spelling out an allowed path would pass a check of dest + "/" + name.
    rootless = JobPayload(source=str(src / "good1.jpg"), dest="", name=str(allowed / "rootless.jpg").lstrip("/"),
                          batch=batch)
    queue("dustspot", redis).enqueue("worker.job.segment_job", rootless.to_dict(), job_id="planted-rootless")
    kinds_count = len(kinds) + 1
    assert kinds_count >= 20

    proc = subprocess.run([sys.executable, "-m", "shared.cli", "worker", "--burst", "--threads", "1", *FLAGS],
                          capture_output=True, text=True, env=env, timeout=600, cwd=outside)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((dst / f"dustspot-batch-{batch}.json").read_text())
    for name, (outcome, detail) in kinds.items():
        stem = os.path.splitext(name)[0]
        job = Job.fetch(job_id(batch, str(src / name)), connection=redis, serializer=serializer())
        if outcome == "ok":
            assert job.get_status() == "finished", (name, job.meta)
            mask = _read_mask(dst / f"{stem}.mask.png")
            assert mask.shape == detail, name
        else:
            assert job.get_status() == "failed", name
            assert detail in job.meta["error"], (name, job.meta["error"])
            assert name in summary["failures"] and detail in summary["failures"][name]
            assert not (dst / f"{stem}.mask.png").exists()
    planted = Job.fetch("planted-escape", connection=redis, serializer=serializer())
    assert planted.get_status() == "failed" and "escapes its root" in planted.meta["error"]
    assert not (tmp_path / "escape.mask.png").exists() and not (allowed / "escape.mask.png").exists()
    planted = Job.fetch("planted-model", connection=redis, serializer=serializer())
    assert planted.get_status() == "failed" and "outside the allowed roots" in planted.meta["error"]
    assert model_dir in planted.meta["error"] and not (dst / "foreign-model.mask.png").exists()
    planted = Job.fetch("planted-rootless", connection=redis, serializer=serializer())
    assert planted.get_status() == "failed" and "must be an s3:// URI or an absolute path" in planted.meta["error"]
    assert not [p for p in outside.rglob("*rootless*")]


def _read_mask(path):
    data = np.fromfile(path, np.uint8)              # the path may not be valid UTF-8
    mask = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.dtype == np.uint8
    return mask


def run_planted_job(payload, job_id, env):
    """Enqueue one payload as a producer would, run a burst worker; (job, worker output, seconds)."""
    import time

    from redis import Redis
    from rq.job import Job

    from shared.queues import queue, serializer
    redis = Redis.from_url(env["REDIS_URL"])
    queue("dustspot", redis).enqueue("worker.job.segment_job", payload.to_dict(), job_id=job_id)
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "shared.cli", "worker", "--burst", "--threads", "1", *FLAGS],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = Job.fetch(job_id, connection=redis, serializer=serializer())
    return job, proc.stdout + proc.stderr, time.time() - started


def test_missing_s3_key_fails_at_once_with_the_reason(tmp_path, redis_url, registry_root, s3_endpoint):
    import boto3

    from shared.jobs import JobPayload
    boto3.client("s3").create_bucket(Bucket="holes")
    env = {**os.environ, "REDIS_URL": redis_url, "DUSTSPOT_MODELS": registry_root}
    payload = JobPayload(source="s3://holes/gone.jpg", dest="s3://holes/out", name="gone.jpg", batch="holes")
    job, _, seconds = run_planted_job(payload, "holes-gone", env)
    assert job.get_status() == "failed" and "s3://holes/gone.jpg" in job.meta["error"]
    assert "not found" in job.meta["error"]
    assert seconds < 60                                # permanent: no retries with backoff


def test_s3_access_denied_fails_at_once_with_the_reason(tmp_path, redis_url, registry_root):
    """moto's server enforcing IAM: the worker's credentials may list the bucket, not read it."""

    import boto3

    from shared.jobs import JobPayload
    from tests.services import free_port, wait_for_port
    port = free_port()
    # The first 5 requests are unauthenticated (set-up); IAM is enforced from then on.
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "5"},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, server, "moto server")
        admin = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1",
                     aws_access_key_id="admin", aws_secret_access_key="admin")
        s3, iam = boto3.client("s3", **admin), boto3.client("iam", **admin)
        s3.create_bucket(Bucket="locked")
        ok, buf = cv2.imencode(".jpg", textured(50, 50))
        s3.put_object(Bucket="locked", Key="scan.jpg", Body=buf.tobytes())
        iam.create_user(UserName="worker")
        iam.put_user_policy(UserName="worker", PolicyName="list-only", PolicyDocument=json.dumps(
            {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": "*"}]}))
        key = iam.create_access_key(UserName="worker")["AccessKey"]
        env = {**os.environ, "REDIS_URL": redis_url, "DUSTSPOT_MODELS": registry_root,
               "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_DEFAULT_REGION": "us-east-1",
               "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        payload = JobPayload(source="s3://locked/scan.jpg", dest=str(tmp_path / "out"), name="scan.jpg", batch="locked")
        job, log, seconds = run_planted_job(payload, "locked-scan", env)
        assert job.get_status() == "failed"
        assert "s3://locked/scan.jpg" in job.meta["error"] and "AccessDenied" in job.meta["error"]
        assert seconds < 60                               # permanent: no retries with backoff
        assert key["SecretAccessKey"] not in log
    finally:
        server.terminate()
        server.wait(10)

"""Queue benchmark: scaling with workers, the queue path against the in-process pipeline, and
the queue's own overhead per job.

    python -m worker.queue_bench [--scans ../shared/data/realdust-dev/images] [--copies 4]
                                 [--model REF] [--noop-jobs 200] [--json-out FILE]

Everything runs on this host against its own redis-server (free port) and real files:

1. in-process reference: `process_scan` over the batch in one process with the default
   threads (what `dustspot bench` measures), images per second;
2. the queue path: workers (`dustspot worker --threads 1`) started and idle first, then the
   clock runs from `dustspot enqueue` until the batch summary is written; 1 worker, then 2;
3. overhead: one worker on a no-op model (an OpenVINO graph that outputs zeros) and tiny
   scans: enqueue-to-start latency of a lone job on an idle worker (rq's enqueued_at /
   started_at, median of 30), and wall time per job for a burst of --noop-jobs jobs minus
   the time the pipeline itself reports for them.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from worker.localredis import start_redis

CLI = [sys.executable, "-m", "shared.cli"]


def noop_model(root):
    """Publish a model whose output is all zeros (near-free inference) into registry `root`."""
    import openvino as ov
    import openvino.opset13 as ops

    from shared import registry
    image = ops.parameter([-1, 3, -1, -1], ov.Type.f32, name="image")
    first = ops.slice(image, np.array([0]), np.array([1]), np.array([1]), np.array([1]))
    zeros = ops.multiply(first, ops.constant(np.float32(0.0)))
    xml = os.path.join(root, ".scratch", "noop.xml")
    os.makedirs(os.path.dirname(xml), exist_ok=True)
    ov.save_model(ov.Model([zeros], [image], "noop"), xml, compress_to_fp16=False)
    manifest = {"architecture": {"family": "noop"}, "precision": "fp32",
                "input": {"layout": "NCHW", "channels": "BGR", "range": [0, 1]},
                "output": "probability", "recommended": {"threshold": 0.5}}
    registry.publish(root, "noop", "1", xml, manifest)


class Workers:
    """`dustspot worker` processes, started and waited for until rq lists them idle."""

    def __init__(self, count, env, flags, redis_url):
        from rq import Worker

        from shared.queues import connect
        self.procs = [subprocess.Popen([*CLI, "worker", *flags], env=env, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL) for _ in range(count)]
        redis = connect(redis_url)
        deadline = time.time() + 120
        while len([w for w in Worker.all(connection=redis) if w.state == "idle"]) < count:
            if time.time() > deadline or any(p.poll() is not None for p in self.procs):
                self.stop()
                raise RuntimeError("workers did not start")
            time.sleep(0.2)

    def stop(self):
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            p.wait(120)


def wait_for(path, timeout=3600):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        if time.time() > deadline:
            raise TimeoutError(path)
        time.sleep(0.05)


def batch_rate(src, dst, count, env):
    """Enqueue src -> dst and wait for the batch summary; images per second, enqueue included."""
    started = time.perf_counter()
    batch = subprocess.run([*CLI, "enqueue", src, "--out", dst], env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    wait_for(os.path.join(dst, f"dustspot-batch-{batch}.json"))
    return count / (time.perf_counter() - started)


def in_process_rate(src, model_ref):
    """Images per second of the pipeline in one process (default threads), after a warm-up."""
    from shared.engine import EngineSettings
    from shared.pipeline import SegmentOptions, open_session, process_scan
    session = open_session(model_ref, SegmentOptions(), EngineSettings())
    files = sorted(glob.glob(os.path.join(src, "*")))
    with tempfile.TemporaryDirectory() as out:
        process_scan(files[0], out, "warmup" + os.path.splitext(files[0])[1], session)
        started = time.perf_counter()
        for path in files:
            process_scan(path, out, os.path.basename(path), session)
        return len(files) / (time.perf_counter() - started)


def overhead(work, env, redis_url, jobs):
    """Enqueue-to-start latency of lone jobs, and per-job wall minus pipeline time of a burst."""
    from rq.job import Job

    from producer.enqueue import enqueue
    from shared.queues import connect, serializer
    registry_root = os.path.join(work, "registry")
    noop_model(registry_root)
    src = os.path.join(work, "tiny")
    os.makedirs(src)
    rng = np.random.default_rng(0)
    for i in range(jobs):
        cv2.imwrite(os.path.join(src, f"t{i:04d}.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    redis = connect(redis_url)
    workers = Workers(1, env, ["--registry", registry_root, "--model", "noop", "--threads", "1"], redis_url)
    try:
        latencies = []
        names = sorted(os.listdir(src))
        for i, name in enumerate(names[:30]):
            result = enqueue(redis, src, os.path.join(work, "lone"), f"lone{i}", keys=[name])
            job = Job.fetch(result.job_ids[0], connection=redis, serializer=serializer())
            deadline = time.time() + 60
            while job.get_status(refresh=True) not in ("finished", "failed"):
                if time.time() > deadline:
                    raise TimeoutError(f"job {job.id} did not finish (is the worker alive?)")
                time.sleep(0.005)
            job.refresh()
            latencies.append((job.started_at - job.enqueued_at).total_seconds())
        dst = os.path.join(work, "burst")
        started = time.perf_counter()
        result = enqueue(redis, src, dst, "burst")
        wait_for(os.path.join(dst, "dustspot-batch-burst.json"))
        wall = time.perf_counter() - started
    finally:
        workers.stop()
    inside = [json.load(open(p))["timings"]["total"] for p in glob.glob(os.path.join(dst, "*.json"))
              if not os.path.basename(p).startswith("dustspot-batch-")]
    return {"lone_job_enqueue_to_start_ms_median": round(1000 * statistics.median(latencies), 2),
            "lone_job_enqueue_to_start_ms_max": round(1000 * max(latencies), 2),
            "burst_jobs": result.enqueued, "burst_wall_ms_per_job": round(1000 * wall / jobs, 2),
            "burst_pipeline_ms_per_job": round(1000 * statistics.mean(inside), 2),
            "burst_queue_overhead_ms_per_job": round(1000 * (wall / jobs - statistics.mean(inside)), 2)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", default=os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                        "examples", "scans"))
    parser.add_argument("--copies", type=int, default=4, help="copies of each scan in the batch")
    parser.add_argument("--model", default=None, help="model reference (default: the bundled one)")
    parser.add_argument("--noop-jobs", type=int, default=200)
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="dustspot-queue-bench-")
    src = os.path.join(work, "src")
    os.makedirs(src)
    scans = sorted(f for f in glob.glob(os.path.join(args.scans, "*")) if os.path.isfile(f))
    for k in range(args.copies):
        for path in scans:
            stem, ext = os.path.splitext(os.path.basename(path))
            shutil.copyfile(path, os.path.join(src, f"{stem}-{k}{ext}"))
    count = len(scans) * args.copies
    redis, url = start_redis(work)
    env = {**os.environ, "REDIS_URL": url}
    model = ["--model", args.model] if args.model else []
    figures = {"scans": count, "source": os.path.abspath(args.scans), "cpus": os.cpu_count()}
    try:
        print("in-process reference ...", file=sys.stderr)
        figures["in_process_images_per_s"] = round(in_process_rate(src, args.model), 3)
        for n in (1, 2):
            print(f"queue path, {n} worker(s) ...", file=sys.stderr)
            workers = Workers(n, env, [*model, "--threads", "1"], url)
            try:
                figures[f"queue_{n}_worker_images_per_s"] = round(
                    batch_rate(src, os.path.join(work, f"out{n}"), count, env), 3)
            finally:
                workers.stop()
        figures["scaling_2_over_1"] = round(figures["queue_2_worker_images_per_s"] /
                                            figures["queue_1_worker_images_per_s"], 3)
        figures["queue_2_workers_over_in_process"] = round(figures["queue_2_worker_images_per_s"] /
                                                           figures["in_process_images_per_s"], 3)
        print("queue overhead with a no-op model ...", file=sys.stderr)
        figures["noop"] = overhead(work, env, url, args.noop_jobs)
    finally:
        redis.terminate()
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(figures, indent=1)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

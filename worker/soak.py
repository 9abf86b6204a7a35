"""Soak test: a batch of small scans through 2 workers while a random worker is SIGKILLed
about every 20 seconds (and replaced). At the end every scan must have a valid mask and an
ok report, written once, and the batch summary must count them all.

    python -m worker.soak [--scans 500] [--kill-every 20] [--model REF] [--size 512]

Starts its own redis-server on a free port; scans and outputs go to a temporary folder.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import cv2
import numpy as np

from worker.localredis import start_redis


def make_scans(folder, count, seed=0):
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = int(rng.integers(200, 400)), int(rng.integers(200, 400))
        img = cv2.resize(rng.integers(0, 256, (h // 16 + 2, w // 16 + 2, 3)).astype(np.uint8), (w, h))
        for _ in range(int(rng.integers(0, 12))):                 # a few dark specks
            cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(1, 4)), (20, 20, 20), -1)
        cv2.imwrite(os.path.join(folder, f"scan{i:04d}.jpg"), img)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=500)
    parser.add_argument("--kill-every", type=float, default=20.0)
    parser.add_argument("--model", default=None)
    parser.add_argument("--size", type=int, default=512, help="working size for the workers")
    parser.add_argument("--timeout", type=float, default=3600)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="dustspot-soak-")
    src, dst = os.path.join(work, "src"), os.path.join(work, "dst")
    os.makedirs(src)
    make_scans(src, args.scans)
    redis, url = start_redis(work)
    env = {**os.environ, "REDIS_URL": url}
    cli = [sys.executable, "-m", "shared.cli"]
    model = ["--model", args.model] if args.model else []
    flags = [*model, "--size", str(args.size), "--threads", "1"]
    batch = subprocess.run([*cli, "enqueue", src, "--out", dst], env=env, capture_output=True, text=True,
                           check=True).stdout.strip()
    summary_path = os.path.join(dst, f"dustspot-batch-{batch}.json")

    def start():
        return subprocess.Popen([*cli, "worker", *flags], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    workers, kills, started = [start(), start()], 0, time.time()
    next_kill = started + args.kill_every
    try:
        while not os.path.exists(summary_path) and time.time() - started < args.timeout:
            time.sleep(0.5)
            if time.time() >= next_kill:
                victim = random.randrange(len(workers))
                workers[victim].send_signal(signal.SIGKILL)
                workers[victim].wait()
                workers[victim] = start()
                kills += 1
                next_kill = time.time() + random.uniform(0.5, 1.5) * args.kill_every
        elapsed = time.time() - started
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(120)

    problems = []
    for i in range(args.scans):
        stem = os.path.join(dst, f"scan{i:04d}")
        mask = cv2.imread(stem + ".mask.png", cv2.IMREAD_UNCHANGED)
        scan = cv2.imread(os.path.join(src, f"scan{i:04d}.jpg"))
        if mask is None or mask.shape != scan.shape[:2] or not set(np.unique(mask)) <= {0, 255}:
            problems.append(f"scan{i:04d}: missing or invalid mask")
            continue
        try:
            report = json.load(open(stem + ".json"))
            if report["status"] != "ok":
                problems.append(f"scan{i:04d}: report status {report['status']}")
        except (OSError, ValueError) as exc:
            problems.append(f"scan{i:04d}: bad report ({exc})")
    stray = [f for _, _, files in os.walk(dst) for f in files if f.endswith(".part")]
    summary = json.load(open(summary_path)) if os.path.exists(summary_path) else {}
    result = {"scans": args.scans, "workers": 2, "kills": kills, "seconds": round(elapsed, 1),
              "valid_outputs": args.scans - len(problems), "problems": problems[:20],
              "leftover_part_files": len(stray), "summary_counts": summary.get("counts")}
    print(json.dumps(result, indent=1))
    redis.terminate()
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if not problems and summary else 1)


if __name__ == "__main__":
    main()

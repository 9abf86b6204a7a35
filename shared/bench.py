"""Benchmark pieces: model GFLOP, timed runs of the pipeline, the seed baseline, peak memory.

`dustspot bench` (shared/commands/bench.py) strings them together and prints ratios
against ../shared/bench/seed_baseline.py measured in the same invocation, because
absolute times on shared 2-core machines drift.
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from .pipeline import segment


def model_gflop(xml_path: str, tile: int) -> float:
    """Multiply-adds x 2 of every convolution for one tile x tile input (batch 1)."""
    import openvino as ov
    model = ov.Core().read_model(xml_path)
    model.reshape([1, 3, tile, tile])
    flop = 0
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "GroupConvolution"):
            continue
        out = list(op.get_output_shape(0))                 # N, Cout, H, W
        # weights: Cout, Cin, kh, kw (Convolution) | G, Cout/G, Cin/G, kh, kw (GroupConvolution);
        # either way the last three give the multiply-adds per output element.
        per_output = int(np.prod(list(op.input(1).get_shape())[-3:]))
        flop += 2 * per_output * int(np.prod(out))
    return flop / 1e9


def time_segment(pixels: np.ndarray, session, seconds: float) -> dict:
    """Repeat `segment` on one decoded image for `seconds` (after one warm-up run)."""
    first = segment(pixels, session)
    laps, stages = [], {}
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or not laps:
        t = time.perf_counter()
        result = segment(pixels, session)
        laps.append(time.perf_counter() - t)
        for k, v in result.timings.items():
            stages.setdefault(k, []).append(v)
    return {"images": len(laps), "mean_s": statistics.mean(laps), "tiles": first.tiles,
            "stages_s": {k: round(statistics.mean(v), 4) for k, v in stages.items()}}


def seed_baseline(script: str, xml_path: str, seconds: float) -> float:
    """Mean seconds per image of ../shared/bench/seed_baseline.py on a model."""
    out = subprocess.run([sys.executable, script, xml_path, str(seconds)], capture_output=True,
                         text=True, check=True).stdout
    return float(out.split("mean_s")[1].split()[0])


# Run in a fresh interpreter so RUSAGE_CHILDREN covers exactly one command.
_MEASURE = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
print(json.dumps({"seconds": time.perf_counter() - t, "returncode": proc.returncode,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "stdout": proc.stdout[-4000:], "stderr": proc.stderr[-4000:]}))
"""


def run_measured(cmd: list[str]) -> dict:
    """Run a command; its wall time and peak resident memory (ru_maxrss of that process)."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["returncode"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {result['stderr']}")
    return result


def reports_stage_means(out_dir: str) -> dict:
    """Mean per-stage timings over the .json reports of a segment run."""
    stages = {}
    for folder, _, files in os.walk(out_dir):
        for name in files:
            if name.endswith(".json") and not name.startswith("dustspot-batch-"):
                report = json.load(open(os.path.join(folder, name)))
                for k, v in report.get("timings", {}).items():
                    stages.setdefault(k, []).append(v)
    return {k: round(statistics.mean(v), 4) for k, v in stages.items()}

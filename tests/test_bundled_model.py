"""The bundled default model on the bundled sample scans: the README's first command."""
import json
import os
import subprocess
import sys

import cv2

from shared import defaults, registry
from shared.metrics import DustScore

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
# Floors well under what the bundled model scores on the samples (0.4.3: object recall 0.53,
# precision 0.95; 0.4.2: 0.58, 0.94; 0.4.1: 0.64, 0.93 before the spot trim;
# 0.4.0: 0.59, 0.91; 0.3.0: 0.54, 0.89; 0.2.0: 0.48, 0.96; 0.1.0: 0.52, 0.84; models/README.md),
# so bf16 rounding elsewhere cannot flip them.
MIN_RECALL = 0.35
MIN_PRECISION = 0.6


def test_bundled_model_is_verified_and_documented():
    handle = registry.resolve(None, defaults.BUNDLED_MODELS)          # the default reference
    assert handle.name == defaults.MODEL
    m = handle.manifest
    assert m["precision"] in ("fp16", "int8") and m["architecture"]["encoder"] == "efficientnet-b1"
    assert m["training"]["command"].startswith("dustspot train")
    assert m["metrics"]["heldout_synthetic"]["object_recall"] is not None
    assert 0 < m["recommended"]["threshold"] < 1


def test_segment_the_samples_with_the_default_model(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DUSTSPOT_MODELS", "DUSTSPOT_MODEL")}
    res = subprocess.run([sys.executable, "-m", "shared.cli", "segment", os.path.join(EXAMPLES, "scans"),
                          "--out", str(tmp_path), "-q"], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    score = DustScore()
    for name in sorted(os.listdir(os.path.join(EXAMPLES, "scans"))):
        stem = os.path.splitext(name)[0]
        scan = cv2.imread(os.path.join(EXAMPLES, "scans", name))
        mask = cv2.imread(str(tmp_path / f"{stem}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == scan.shape[:2]
        report = json.loads((tmp_path / f"{stem}.json").read_text())
        assert report["model"]["name"] == defaults.MODEL and report["spot_count"] > 0
        score.add(cv2.imread(os.path.join(EXAMPLES, "truth", stem + ".png"), cv2.IMREAD_GRAYSCALE), mask)
    result = score.result()
    # It really finds dust (an untrained network scores near zero on both).
    assert result["object_recall"] >= MIN_RECALL, result
    assert result["object_precision"] >= MIN_PRECISION, result

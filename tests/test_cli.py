"""`dustspot segment` as a user runs it: a real subprocess on real folders."""
import json
import os
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest

from tests.conftest import textured
from tests.scans import write, write_truncated_jpeg


def run_cli(args, registry_root=None, **kwargs):
    env = dict(os.environ)
    if registry_root:
        env["DUSTSPOT_MODELS"] = registry_root
    return subprocess.run([sys.executable, "-m", "shared.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300, **kwargs)


@pytest.fixture
def mixed_folder(tmp_path):
    """Good scans (nested) beside a corrupt JPEG, a zero-byte file and a text file named .png."""
    src = tmp_path / "scans"
    (src / "roll1").mkdir(parents=True)
    write(src / "a.jpg", textured(120, 200, seed=1))
    write(src / "roll1" / "b.png", textured(150, 100, seed=2))
    write(src / "roll1" / "c.tif", textured(80, 90, seed=3, dtype=np.uint16))
    write_truncated_jpeg(src / "corrupt.jpg", textured(300, 300, seed=4))
    (src / "zero.jpg").write_bytes(b"")
    (src / "notes.png").write_text("this is text, not a picture")
    (src / "readme.txt").write_text("not a scan: skipped by extension")
    return src


def test_segment_folder_reports_bad_files_and_finishes_good_ones(tmp_path, registry_root, mixed_folder):
    out = tmp_path / "out"
    res = run_cli(["segment", str(mixed_folder), "--out", str(out), "--model", "conv", "--size", "256",
                   "--tile", "128", "--overlap", "32", "-q"], registry_root)
    assert res.returncode == 1, res.stderr
    for rel, shape in [("a", (120, 200)), ("roll1/b", (150, 100)), ("roll1/c", (80, 90))]:
        mask = cv2.imread(str(out / f"{rel}.mask.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == shape
        assert json.loads((out / f"{rel}.json").read_text())["status"] == "ok"
    assert "3 of 6 scans done, 3 failed" in res.stdout
    for name, reason in [("corrupt.jpg", "truncated JPEG"), ("zero.jpg", "empty file"), ("notes.png", "not an image")]:
        line = next(l for l in res.stderr.splitlines() if l.startswith(f"FAILED {name}"))
        assert reason in line and str(mixed_folder / name) in line
        assert not (out / (os.path.splitext(name)[0] + ".mask.png")).exists()
    assert not (out / "readme.json").exists()


def test_segment_with_two_worker_processes(tmp_path, registry_root):
    src = tmp_path / "scans"
    src.mkdir()
    for i in range(4):
        write(src / f"s{i}.png", textured(100, 140, seed=i))
    out = tmp_path / "out"
    res = run_cli(["segment", str(src), "--out", str(out), "--model", "conv", "--workers", "2",
                   "--size", "256", "--tile", "128", "--overlap", "32", "-q"], registry_root)
    assert res.returncode == 0, res.stderr
    assert "4 of 4 scans done, 0 failed" in res.stdout
    assert sorted(p.name for p in out.glob("*.mask.png")) == [f"s{i}.mask.png" for i in range(4)]


def test_bad_model_reference_is_a_clear_error(tmp_path, registry_root):
    write(tmp_path / "a.png", textured(50, 50))
    res = run_cli(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--model", "missing"],
                  registry_root)
    assert res.returncode != 0 and "model 'missing' not found" in res.stderr


def test_one_working_resolution_only(tmp_path):
    write(tmp_path / "a.png", textured(50, 50))
    res = run_cli(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), "--native", "--size", "100"])
    assert res.returncode == 2 and "choose one working resolution" in res.stderr


@pytest.mark.parametrize("flag, value, reason", [
    ("--tile", "16", "16 is not a whole number from 32 to"),
    ("--size", "999999999", "999999999 is not a whole number from 32 to"),
    ("--overlap", "x", "'x' is not a whole number"),
    ("--threshold", "0", "0.0 is not a number in (0, 1]"),
    ("--spot-threshold", "1.5", "1.5 is not a number in [0, 1]"),
    ("--min-area", "0", "0 is not a whole number from 1 to"),
    ("--max-pixels", "0", "0 is not a whole number from 1 to 2^62"),
])
def test_a_flag_out_of_its_option_rule_is_a_usage_error_in_the_rule_words(tmp_path, flag, value, reason):
    from shared.option_rules import RULES, OptionError, check_option_values
    write(tmp_path / "a.png", textured(50, 50))
    res = run_cli(["segment", str(tmp_path / "a.png"), "--out", str(tmp_path / "o"), flag, value])
    assert res.returncode == 2 and f"Invalid value for '{flag}': {reason}" in res.stderr
    assert not (tmp_path / "o").exists()
    # a job payload with the same value is refused by the same rule, in the same words
    name = flag.strip("-").replace("-", "_").replace("size", "working_size")
    if value != "x":
        number = float(value) if "threshold" in flag else int(value)
        with pytest.raises(OptionError, match=re.escape(RULES[name][1])):
            check_option_values({name: number})


def test_help_names_the_range_each_ruled_flag_accepts():
    from shared.option_rules import RULES
    shown = " ".join(run_cli(["segment", "--help"]).stdout.split())     # click wraps the help
    for rule in ("working_size", "tile", "overlap", "threshold", "spot_threshold", "min_area"):
        assert RULES[rule][1].capitalize() in shown, rule
    prepare = " ".join(run_cli(["prepare", "--help"]).stdout.split())
    assert f"{RULES['working_size'][1].capitalize()}. [default: 2016]" in prepare

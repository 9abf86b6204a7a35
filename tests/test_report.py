"""report.html in a real headless Chromium: it renders, thumbnails load, order and links are right."""
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import cv2
import pytest

from tests.conftest import textured

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Cards(HTMLParser):
    def __init__(self):
        super().__init__()
        self.cards, self.failed, self.body, self.links = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "div" and a.get("class") == "scan":
            self.cards.append((a["data-name"], int(a["data-spots"])))
        if tag == "div" and a.get("class") == "failed":
            self.failed.append(a["data-name"])
        if tag == "a" and a.get("class") in ("mask", "json"):
            self.links.append(a["href"])


def chromium(*args, cwd):
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (apt-get install chromium; .ci/run does it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={cwd / 'profile'}", "--virtual-time-budget=5000"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.parametrize("overlay", [True, False])
def test_report_renders_in_headless_chromium(tmp_path, registry_root, overlay):
    src, out = tmp_path / "scans", tmp_path / "out"
    src.mkdir()
    for name, count in [("few", 1), ("many", 4), ("some", 2)]:
        img = textured(200, 300, seed=count) // 2
        for k in range(count):
            cv2.circle(img, (40 + 60 * k, 100), 5, (255, 255, 255), -1)
        cv2.imwrite(str(src / f"{name}.png"), img)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    env = {**os.environ, "DUSTSPOT_MODELS": registry_root}
    cmd = [sys.executable, "-m", "shared.cli", "segment", str(src), "--out", str(out), "--model", "identity",
           "--native", "--tile", "128", "--overlap", "32", "--threshold", "0.5", "-q"] + (["--overlay"] if overlay else [])
    subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    if not overlay:
        res = subprocess.run([sys.executable, "-m", "shared.cli", "report", str(out)], env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
    page = out / "report.html"
    assert page.exists()

    dom = chromium("--dump-dom", page.as_uri(), cwd=tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    parsed = Cards()
    parsed.feed(dom.stdout)
    assert parsed.cards == [("many.png", 4), ("some.png", 2), ("few.png", 1)]   # most detections first
    assert parsed.failed == ["broken.jpg"]
    assert parsed.body.get("data-loaded") == "3/3"                        # every thumbnail loaded
    for href in parsed.links:
        assert (out / href).exists()

    shot = tmp_path / "report.png"
    res = chromium(f"--screenshot={shot}", "--window-size=1200,800", page.as_uri(), cwd=tmp_path)
    assert res.returncode == 0 and shot.exists(), res.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.shape[:2] == (800, 1200) and image.std() > 10              # something was drawn

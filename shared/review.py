"""The review loop: rank scans for labelling, and turn results into CVAT pre-annotations."""
import json
import posixpath

import cv2
import numpy as np

from .outputs import SUFFIX_MASK, SUFFIX_REPORT
from .storage import open_storage

UNCERTAIN = (0.35, 0.65)     # spot scores in this band are the model's doubtful calls


def load_reports(out_root: str) -> list[dict]:
    store = open_storage(out_root)
    reports = []
    for key in store.list():
        if key.endswith(SUFFIX_REPORT) and not posixpath.basename(key).startswith("dustspot-batch-"):
            report = json.loads(store.read(key))
            report["_stem"] = key[: -len(SUFFIX_REPORT)]
            reports.append(report)
    return reports


def rank_for_labelling(reports: list[dict]) -> list[dict]:
    """Most uncertain first (spots scored near the threshold), then most detections."""
    rows = []
    for r in reports:
        if r.get("status") != "ok":
            continue
        scores = [s["score"] for s in r.get("spots", [])]
        uncertain = sum(UNCERTAIN[0] <= s <= UNCERTAIN[1] for s in scores)
        rows.append({"name": r["name"], "stem": r["_stem"], "input": r["input"], "spots": len(scores),
                     "uncertain": uncertain})
    return sorted(rows, key=lambda row: (-row["uncertain"], -row["spots"], row["name"]))


def cvat_entries(out_root: str, rows: list[dict]):
    """(cvat name, image bytes, ext, mask) for each ranked row: inputs as they are, predicted masks."""
    from .storage import printable, read_uri
    out = open_storage(out_root)
    for row in rows:
        source = row["input"]
        data = read_uri(source)
        mask = cv2.imdecode(np.frombuffer(out.read(row["stem"] + SUFFIX_MASK), np.uint8), cv2.IMREAD_GRAYSCALE)
        name = printable(row["stem"]).replace("/", "__")
        yield name, data, posixpath.splitext(source)[1].lower(), mask

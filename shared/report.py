"""The batch report: report.html at the destination root, for a person to review a batch.

Scans with the most detections come first; each card shows a thumbnail with the detections
circled (the scan's .overlay.jpg when it was written, otherwise a thumbnail made here from
the input), the spot count and links to the mask and the report. Failed scans are listed
with their reasons. Static HTML with relative links: it works from a folder, a web server
or an S3 bucket.
"""
import html
import json
import posixpath

from .imageio import encode_jpeg, read_scan
from .outputs import SUFFIX_MASK, SUFFIX_OVERLAY, SUFFIX_REPORT, render_overlay
from .storage import locate, open_storage, printable

REPORT_NAME = "report.html"
THUMBS = ".report/thumbs"
THUMB_LONG_SIDE = 480

_STYLE = """
body{font:14px system-ui,sans-serif;margin:24px;background:#f6f6f4;color:#222}
h1{font-size:20px;margin:0 0 4px} .totals{margin:0 0 16px;color:#555}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
.scan{background:#fff;border-radius:6px;box-shadow:0 1px 3px #0002;overflow:hidden}
.scan img{width:100%;display:block;background:#ddd}
.scan .meta{padding:8px 10px} .scan .name{font-weight:600;word-break:break-all}
.count{float:right;background:#c62828;color:#fff;border-radius:10px;padding:0 8px}
.failed{background:#fff3f3;border-left:4px solid #c62828;padding:6px 10px;margin:4px 0}
a{color:#1565c0}
"""


def _thumbnail(out, report: dict, stem: str, keys: set) -> str:
    """Relative path of a thumbnail with detections (made from the input if needed)."""
    if stem + SUFFIX_OVERLAY in keys:
        return stem + SUFFIX_OVERLAY
    thumb = f"{THUMBS}/{stem}.jpg"
    if thumb not in keys:
        storage, key = locate(report["input"])
        path = storage.local_path(key)
        scan = read_scan(path) if path else read_scan(report["input"], storage.read(key))
        out.write(thumb, encode_jpeg(render_overlay(scan.pixels, report.get("spots", []), THUMB_LONG_SIDE)))
    return thumb


def write_report(out_root: str, title: str | None = None) -> str:
    """Build report.html from the reports under out_root; returns where it was written."""
    out = open_storage(out_root)
    keys = set(out.list())
    done, failed = [], []
    for key in sorted(keys):
        if not key.endswith(SUFFIX_REPORT) or posixpath.basename(key).startswith("dustspot-batch-"):
            continue
        report = json.loads(out.read(key))
        stem = key[: -len(SUFFIX_REPORT)]
        if report.get("status") == "ok" and stem + SUFFIX_MASK in keys:
            done.append((report, stem))
        else:
            failed.append((report, stem))
    done.sort(key=lambda item: (-item[0].get("spot_count", 0), item[0]["name"]))

    def link(path):
        return html.escape(printable(path), quote=True)

    cards = []
    for report, stem in done:
        name = html.escape(printable(report["name"]))
        thumb = _thumbnail(out, report, stem, keys)
        cards.append(
            f'<div class="scan" data-name="{name}" data-spots="{report.get("spot_count", 0)}">'
            f'<a href="{link(stem + SUFFIX_MASK)}"><img src="{link(thumb)}" alt="{name}"></a>'
            f'<div class="meta"><span class="count">{report.get("spot_count", 0)}</span>'
            f'<div class="name">{name}</div>'
            f'{report["size"]["width"]}x{report["size"]["height"]} &middot; '
            f'<a class="mask" href="{link(stem + SUFFIX_MASK)}">mask</a> &middot; '
            f'<a class="json" href="{link(stem + SUFFIX_REPORT)}">report</a></div></div>')
    failures = [f'<div class="failed" data-name="{html.escape(printable(r.get("name", stem)))}">'
                f'<b>{html.escape(printable(r.get("name", stem)))}</b>: '
                f'{html.escape(printable("; ".join(r.get("errors", []))))}</div>' for r, stem in failed]
    spots = sum(r.get("spot_count", 0) for r, _ in done)
    title = html.escape(title or f"dustspot: {printable(out_root)}")
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>'
            f'<style>{_STYLE}</style></head><body><h1>{title}</h1>'
            f'<p class="totals"><span id="scans">{len(done)}</span> scans, <span id="spots">{spots}</span> spots, '
            f'<span id="failed">{len(failed)}</span> failed. Most detections first; click a thumbnail for its mask.</p>'
            + ("<h2>Failed</h2>" + "".join(failures) if failures else "")
            + f'<div class="grid">{"".join(cards)}</div>'
            # Marks how many thumbnails really loaded (for a person: broken images are visible
            # anyway; for the headless-browser test: readable from the DOM).
            + "<script>addEventListener('load',()=>{const i=[...document.images];"
              "document.body.dataset.loaded=i.filter(x=>x.complete&&x.naturalWidth>0).length+'/'+i.length})"
              "</script></body></html>")
    return out.write(REPORT_NAME, page.encode())

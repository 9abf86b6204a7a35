"""`dustspot rethreshold`: new sensitivity from the stored probability maps, no model run."""
import json

import click

from .. import defaults
from .options import rule_option


@click.command("rethreshold")
@click.argument("out_root")
@rule_option("--threshold", rule="threshold", number=float, required=True,
             help="New probability threshold.")
@rule_option("--spot-threshold", rule="spot_threshold", number=float, default=None,
             help="Keep only spots with a pixel at least this probable (default: each scan's own "
                  "setting, as its report records it).")
@rule_option("--min-area", rule="min_area", default=None,
             help="Drop spots smaller than this many pixels (default: each scan's own setting).")
@rule_option("--trim", rule="trim", number=float, default=None,
             help="Spot trim (see segment --trim; default: each scan's own setting). A trim reads "
                  "the scan again from the input its report names.")
@rule_option("--neutral", rule="neutral", number=float, default=None,
             help="Spot colour test (see segment --neutral; default: each scan's own setting). It reads "
                  "the scan again too.")
def rethreshold(out_root, threshold, spot_threshold, min_area, trim, neutral):
    """Rebuild masks, spots and reports under OUT_ROOT (folder or s3://...) at a new threshold.

    Needs the probability maps: run `segment`/`enqueue` with --prob. The masks are exactly
    what a fresh run at this threshold would give (the same 8-bit maps, the same rule, the
    same trim and colour test on the same scan).
    """
    import cv2
    import numpy as np

    from ..errors import DustspotError
    from ..imageio import encode_png
    from ..outputs import SUFFIX_MASK, SUFFIX_PROB, SUFFIX_REPORT
    from ..pipeline import read_source
    from ..spots import spots_and_mask
    from ..storage import open_storage, printable

    store = open_storage(out_root)
    keys = store.list()
    reports = [k for k in keys if k.endswith(SUFFIX_REPORT) and not k.split("/")[-1].startswith("dustspot-batch-")]
    done = skipped = 0
    for key in reports:
        report = json.loads(store.read(key))
        stem = key[: -len(SUFFIX_REPORT)]
        if report.get("status") != "ok" or stem + SUFFIX_PROB not in keys:
            skipped += 1
            continue
        prob8 = cv2.imdecode(np.frombuffer(store.read(stem + SUFFIX_PROB), np.uint8), cv2.IMREAD_UNCHANGED)
        # unset flags keep the scan's settings: the same result as a fresh run at this threshold
        spot = (report["settings"].get("spot_threshold") or 0.0) if spot_threshold is None else spot_threshold
        area = (report["settings"].get("min_area") or 1) if min_area is None else min_area
        # reports from before the trim have none: their masks were made without one
        cut = (report["settings"].get("trim") or 0.0) if trim is None else trim
        tolerance = (report["settings"].get("neutral") or 0.0) if neutral is None else neutral
        pixels = None
        if cut or tolerance:
            try:
                pixels = read_source(report["input"], report["settings"].get("max_pixels") or defaults.MAX_PIXELS)[0].pixels
                if pixels.shape[:2] != prob8.shape:
                    raise DustspotError(f"{printable(report['input'])} is {pixels.shape[1]}x{pixels.shape[0]} px now, "
                                        f"its probability map {prob8.shape[1]}x{prob8.shape[0]}: not the scan segmented")
            except DustspotError as exc:
                click.echo(f"skipped {printable(key)}: the trim and the colour test need the scan: "
                           f"{printable(str(exc))}", err=True)
                skipped += 1
                continue
        spots, mask = spots_and_mask(prob8, threshold, spot, area, cut, pixels, neutral=tolerance)
        store.write(stem + SUFFIX_MASK, encode_png(mask))
        report["settings"].update(threshold=threshold, spot_threshold=spot, min_area=area, trim=cut, neutral=tolerance)
        report.update(spots=spots, spot_count=len(spots),
                      dust_fraction=round(float(np.count_nonzero(mask)) / mask.size, 6), rethresholded=True)
        store.write(key, json.dumps(report, indent=1).encode())
        done += 1
    click.echo(f"{done} scans rethresholded at {threshold}, {skipped} skipped (failed, no .prob.png, or the "
               "scan to trim or test unreadable)")

"""A/B of the working-image shrink filter: `dustspot segment` with every resize the pipeline
makes to its working image forced to one OpenCV filter.

    RESIZE=area python -m trainer.resize_ab segment FRAMES/images --out OUT -q
    python ../shared/eval/score.py FRAMES/gt OUT

Session 11 measured `shared.pipeline.to_working`'s rule with it (docs/performance.md): frames
from `dustspot synth --scans --long-side 4800|6000|7200`, the default model at 2400 px.
"""
import os
import sys

import cv2

import shared.pipeline as pipeline

FILTERS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA}


def forced(pixels, wh, ww):
    if pixels.shape[:2] == (wh, ww):
        return pixels
    return cv2.resize(pixels, (ww, wh), interpolation=FILTERS[os.environ["RESIZE"]])


if __name__ == "__main__":
    if os.environ.get("RESIZE") not in FILTERS:
        sys.exit(f"set RESIZE to one of {', '.join(FILTERS)}")
    pipeline.to_working = forced
    from shared.cli import main
    sys.argv[0] = "dustspot"
    main()

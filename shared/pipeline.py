"""The one pipeline: scan in, dust mask and report out. Every entry point calls it.

    session = open_session(model_ref, options)        # resolve, verify, compile: once
    result  = segment(pixels, session)                 # array -> probability, mask, spots
    report  = process_scan(uri, out_root, rel, session)  # read -> segment -> write outputs

Stages of `segment`: working image (resize per mode) -> tiles (views, no copies) ->
engine (batched, async) -> blended probability map -> upsampled smoothly to the native
size (as 8-bit, so the stored .prob.png rethresholds to exactly the same mask) ->
threshold -> spots.
"""
import json
import os
import time
from dataclasses import asdict, dataclass, field, replace

import cv2
import numpy as np

from . import __version__, defaults
from .engine import EngineSettings, OpenVINOEngine
from .errors import DustspotError, ProcessingError
from .imageio import read_scan
from .inpaint import heal
from .option_rules import check_option_values
from .outputs import (
    OUTPUT_SUFFIXES,
    SUFFIX_REPORT,
    encode_clean,
    encode_outputs,
    render_overlay,
)
from .registry import resolve
from .spots import spots_and_mask, threshold_mask
from .storage import locate, open_storage, output_stem, printable, read_limit
from .tiling import TileGrid


@dataclass
class SegmentOptions:
    """What to compute. None means: the model's recommendation, else defaults.py."""
    mode: str | None = None              # size | square | native
    working_size: int | None = None      # long side (size) or side (square)
    tile: int | None = None
    overlap: int | None = None
    margin: int | None = None
    threshold: float | None = None
    spot_threshold: float | None = None  # a spot needs one pixel at least this probable (0: off)
    min_area: int | None = None          # native pixels; smaller spots are dropped
    trim: float | None = None            # spot extent from the scan's contrast (shared/trim.py; 0: off)
    neutral: float | None = None         # colour test's tolerance, levels (shared/neutral.py; 0: off)
    overlay: bool = False
    prob: bool = False
    inpaint: bool = False                # also write <name>.clean.<ext>
    max_pixels: int = defaults.MAX_PIXELS

    def resolved(self, manifest: dict | None = None) -> "SegmentOptions":
        recommended = (manifest or {}).get("recommended", {})

        def pick(value, key, default):
            return value if value is not None else recommended.get(key, default)

        out = replace(
            self,
            mode=pick(self.mode, "mode", defaults.MODE),
            working_size=pick(self.working_size, "working_size", defaults.WORKING_SIZE),
            tile=pick(self.tile, "tile", defaults.TILE),
            overlap=pick(self.overlap, "overlap", defaults.OVERLAP),
            margin=pick(self.margin, "margin", defaults.TILE_MARGIN),
            threshold=pick(self.threshold, "threshold", defaults.THRESHOLD),
            min_area=pick(self.min_area, "min_area", defaults.MIN_SPOT_AREA),
            # a threshold tuned before the trim (0.4.1 and older) or the colour test (0.4.2 and
            # older) existed was tuned without it
            trim=pick(self.trim, "trim", 0.0 if "threshold" in recommended else defaults.TRIM),
            neutral=pick(self.neutral, "neutral", 0.0 if "threshold" in recommended else defaults.NEUTRAL))
        # kept as given (not raised to the threshold) so that rethreshold can reapply it
        out.spot_threshold = pick(self.spot_threshold, "spot_threshold", 0.0)
        check_option_values(asdict(out))     # the rules a job's options obey (option_rules.py)
        return out


@dataclass
class Session:
    """A compiled model plus the resolved options it runs with. Build one per process."""
    engine: object
    options: SegmentOptions
    model: dict


def open_session(model_ref: str | None = None, options: SegmentOptions | None = None,
                 engine_settings: EngineSettings | None = None,
                 registry_root: str | None = None) -> Session:
    handle = resolve(model_ref, registry_root)
    options = (options or SegmentOptions()).resolved(handle.manifest)
    settings = replace(engine_settings or EngineSettings(), tile=options.tile)
    engine = OpenVINOEngine(handle.xml, settings, info=handle.describe())
    return Session(engine, options, engine.info)


@dataclass
class Segmentation:
    mask: np.ndarray                 # native size, uint8 0/255
    prob8: np.ndarray                # native size, uint8 probability * 255
    spots: list
    working_shape: tuple
    tiles: int
    timings: dict = field(default_factory=dict)


def working_shape(height: int, width: int, options: SegmentOptions) -> tuple[int, int]:
    if options.mode == "native":
        return height, width
    if options.mode == "square":
        return options.working_size, options.working_size
    scale = options.working_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def to_working(pixels: np.ndarray, wh: int, ww: int) -> np.ndarray:
    """The working image: area-averaged for a mild shrink, bilinear otherwise.

    Shrinking by 2x or more on both sides, bilinear sampling found as much dust as the area
    average or more (0.4.1 on held-out synthetic frames, session 11: object recall 0.517 ->
    0.523 at 2.5x, 0.489 -> 0.501 at 3x, equal at 2x; precision within 0.3 points or better),
    and takes a fraction of the time (a 36 MP scan to 2016 square: 0.006 s in the bench, area
    0.05-0.09 s in earlier sessions).
    At 1.4x the area average kept 1.4 points more precision, so mild shrinks keep it. Why
    bilinear wins from 2x is not settled (training tiles are area-averaged from native scale);
    the frames' photos were upsampled to 6000-7200 px, so their finest texture is the film
    grain, and a real scan with finer native detail may alias more (docs/performance.md).
    A halving before the area step (OpenCV's fast whole-number path) lost 2.4 points of recall.
    """
    height, width = pixels.shape[:2]
    if (wh, ww) == (height, width):
        return pixels
    mild_shrink = wh * ww < height * width and (height < 2 * wh or width < 2 * ww)
    return cv2.resize(pixels, (ww, wh), interpolation=cv2.INTER_AREA if mild_shrink else cv2.INTER_LINEAR)


def segment(pixels: np.ndarray, session: Session) -> Segmentation:
    """The core: a decoded scan (HxW or HxWx3, uint8/uint16) -> mask, probability, spots."""
    o, timings = session.options, {}
    clock = time.perf_counter()

    def lap(stage):
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round(now - clock, 4)
        clock = now

    height, width = pixels.shape[:2]
    wh, ww = working_shape(height, width, o)
    working = to_working(pixels, wh, ww)
    grid = TileGrid(wh, ww, o.tile, o.overlap, o.margin)
    ph, pw = grid.padded_shape
    if (ph, pw) != (wh, ww):
        working = cv2.copyMakeBorder(working, 0, ph - wh, 0, pw - ww, cv2.BORDER_REFLECT_101)
    lap("resize")

    merged = np.zeros((wh, ww), np.float32)
    scale = 1.0 / (65535.0 if pixels.dtype == np.uint16 else 255.0)
    session.engine.infer(((i, grid.cut(working, i)) for i in range(len(grid))), scale,
                         lambda i, out: grid.blend(merged, i, out))
    del working
    lap("infer")

    prob8 = cv2.convertScaleAbs(merged, alpha=255.0)      # round and saturate to uint8
    del merged
    if (wh, ww) != (height, width):
        # Probabilities, not the mask, are upsampled: edges stay smooth, not blocky.
        prob8 = cv2.resize(prob8, (width, height), interpolation=cv2.INTER_LINEAR)
    lap("upsample")

    mask = threshold_mask(prob8, o.threshold)
    lap("threshold")

    # spots without a confident pixel, too small or of a colour no dust makes dropped; the rest
    # trimmed to the scan's dust
    spots, mask = spots_and_mask(prob8, o.threshold, o.spot_threshold, o.min_area, o.trim, pixels, mask, o.neutral)
    lap("spots")
    return Segmentation(mask, prob8, spots, (wh, ww), len(grid), timings)


def _settings_for_report(options: SegmentOptions, seg: Segmentation | None) -> dict:
    settings = asdict(options)
    if seg is not None:
        settings["working_shape"] = list(seg.working_shape)
        settings["tiles"] = seg.tiles
    return settings


def read_source(source: str, max_pixels: int = defaults.MAX_PIXELS):
    """(scan, read seconds, decode seconds) of a local path or storage URL (s3://...)."""
    t0 = time.perf_counter()
    storage, key = locate(source)
    path = storage.local_path(key)
    if path is not None:
        return read_scan(path, max_pixels=max_pixels), 0.0, time.perf_counter() - t0
    data = storage.read(key, max_bytes=read_limit(max_pixels))
    read_time = time.perf_counter() - t0
    return read_scan(source, data, max_pixels=max_pixels), read_time, time.perf_counter() - t0 - read_time


def process_scan(source: str, out_root: str, relative_name: str, session: Session) -> dict:
    """Read one scan, segment it, write its outputs under `out_root`; return the report.

    Outputs for relative name a/b.tif: a/b.mask.png, a/b.json (+ .overlay.jpg, .prob.png,
    .clean.<ext> on request). The report is written last, so its presence means the outputs
    are complete; outputs an earlier run listed in its report and this run did not write are
    deleted before it, so the report lists exactly this stem's outputs that are there.
    On failure a report with status "failed" and the reason is written (best effort), then
    the earlier run's outputs and those this run wrote are deleted (best effort: no mask of
    another run beside a failed report), and the error is raised again for the caller (CLI
    summary, RQ failed registry).
    """
    started = time.perf_counter()
    stem = output_stem(relative_name)
    dest = open_storage(out_root)
    report = {"input": source, "name": relative_name, "status": "ok",
              "model": session.model, "dustspot_version": __version__, "errors": []}
    previous = _previous_outputs(dest, stem)
    written = {}
    try:
        scan, read_time, decode_time = read_source(source, session.options.max_pixels)
        seg = segment(scan.pixels, session)
        t1 = time.perf_counter()
        overlay = render_overlay(scan.pixels, seg.spots) if session.options.overlay else None
        files = encode_outputs(seg.mask, seg.prob8 if session.options.prob else None, overlay)
        if session.options.inpaint:
            suffix, data = encode_clean(heal(scan.pixels, seg.mask, seg.spots), scan.format,
                                        scan.icc_profile, scan.exif)
            files[suffix] = data
        encode_time = time.perf_counter() - t1
        del scan
        t2 = time.perf_counter()
        for suffix, data in files.items():
            # listed before the write, so that a write failing half-way is cleaned up too
            written[suffix.strip(".").split(".")[0]] = stem + suffix
            dest.write(stem + suffix, data)
        _delete_outputs(dest, previous - set(written.values()), source)
        report.update(
            size={"width": int(seg.mask.shape[1]), "height": int(seg.mask.shape[0])},
            settings=_settings_for_report(session.options, seg),
            outputs=written, spot_count=len(seg.spots),
            dust_fraction=round(float(np.count_nonzero(seg.mask)) / seg.mask.size, 6),
            spots=seg.spots)
        timings = {"read": round(read_time, 4), "decode": round(decode_time, 4), **seg.timings,
                   "encode": round(encode_time, 4), "write": round(time.perf_counter() - t2, 4)}
        report["timings"] = timings
        report["timings"]["total"] = round(time.perf_counter() - started, 4)
        _write_report(dest, stem, report)
        return report
    except Exception as exc:
        # Unforeseen failures (a library's ValueError, MemoryError, a job timeout) are recorded
        # the same way as foreseen ones: a failed report, and an error the callers handle.
        error = exc if isinstance(exc, DustspotError) else ProcessingError(printable(source), exc)
        report.update(status="failed", errors=[printable(str(error))],
                      settings=_settings_for_report(session.options, None))
        try:
            _write_report(dest, stem, report)
        except DustspotError:
            pass                         # the destination itself is the problem; raise the original
        _delete_outputs(dest, previous | set(written.values()), source, best_effort=True)
        if error is exc:
            raise
        raise error from exc


def _previous_outputs(dest, stem: str) -> set[str]:
    """The keys of this stem's outputs that the earlier report lists (best effort: none if
    there is none or it cannot be read). Only names `stem + an output suffix` are taken, so a
    corrupt or hostile report cannot have anything else deleted (the report, other scans')."""
    try:
        outputs = json.loads(dest.read(stem + SUFFIX_REPORT)).get("outputs")
    except (DustspotError, ValueError, RecursionError, AttributeError):
        return set()
    if not isinstance(outputs, dict):
        return set()
    return {key for key in outputs.values()
            if isinstance(key, str) and key.startswith(stem) and key[len(stem):] in OUTPUT_SUFFIXES}


def _delete_outputs(dest, keys: set[str], source: str, best_effort: bool = False) -> None:
    """Delete these output keys, never the input scan (input and output folders may meet).
    best_effort: a key that cannot be deleted is left and the others are still tried."""
    if not keys:
        return
    try:
        storage, source_key = locate(source)          # once, not per key
        source_path, source_uri = storage.local_path(source_key), storage.uri(source_key)
    except DustspotError:
        if not best_effort:
            raise
        return                                        # cannot tell the input apart: delete nothing
    if source_path is not None:
        source_path = os.path.realpath(source_path)
    for key in sorted(keys):
        path = dest.local_path(key)
        if (os.path.realpath(path) == source_path if path is not None and source_path is not None
                else dest.uri(key) == source_uri):
            continue
        try:
            dest.delete(key)
        except DustspotError:
            if not best_effort:
                raise


def _write_report(dest, stem: str, report: dict) -> None:
    dest.write(stem + SUFFIX_REPORT, json.dumps(report, indent=1).encode())


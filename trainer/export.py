"""Trained network -> OpenVINO IR (FP16 weights) -> a version in the model registry.

The exported graph takes float32 NCHW BGR in [0, 1] (normalisation is inside DustNet)
and returns sigmoid probabilities [N, 1, H, W]; N, H and W are dynamic (H, W multiples of 32).
"""
import json
import os
import tempfile

import numpy as np
import torch

from . import model as models
from . import settings, stages

EXAMPLE_SIZE = 256
CHECK_SIZE = 512             # the IR is compiled and run once at this size before publishing


def load_checkpoint(path):
    """A run folder (its model.pt, else checkpoint.pt) or a checkpoint file -> (net, state, run)."""
    if os.path.isdir(path):
        run = path
        for name in ("model.pt", "checkpoint.pt"):
            if os.path.exists(os.path.join(path, name)):
                path = os.path.join(path, name)
                break
        else:
            raise FileNotFoundError(f"{run}: no model.pt or checkpoint.pt")
    else:
        run = os.path.dirname(os.path.abspath(path))
    state = torch.load(path, map_location="cpu", weights_only=False)
    net = models.build(state["config"]["spec"])
    net.load_state_dict(state["model"])
    net.eval()
    return net, state, run


def load_weights_or_exit(path):
    """load_checkpoint's network for the `python -m trainer.*` probes: a SystemExit naming the
    file and the reason instead of a traceback (missing, truncated, not a trainer checkpoint)."""
    try:
        return load_checkpoint(path)[0]
    except Exception as exc:  # noqa: BLE001 - any failure to load means the same to the user
        raise SystemExit(f"{path}: cannot be loaded as trained weights ({type(exc).__name__}: {exc})") from None


def to_ir(net, xml_path, fp16=True):
    """Convert with dynamic batch and spatial size; returns the xml path."""
    import openvino as ov
    wrapped = models.Probabilities(net).eval()
    example = torch.rand(1, 3, EXAMPLE_SIZE, EXAMPLE_SIZE)
    with torch.no_grad():
        ov_model = ov.convert_model(wrapped, example_input=example,
                                    input=[ov.PartialShape([-1, 3, -1, -1])])
    ov_model.inputs[0].get_tensor().set_names({"image"})
    ov_model.outputs[0].get_tensor().set_names({"probability"})
    ov.save_model(ov_model, xml_path, compress_to_fp16=fp16)
    return xml_path


def check_ir(xml_path, net=None, size=CHECK_SIZE):
    """Compile and run the IR on a 1x3xSxS input; compare with torch when given. Returns max |diff|."""
    import openvino as ov
    core = ov.Core()
    compiled = core.compile_model(xml_path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    out = compiled(x)[0]
    if out.shape != (1, 1, size, size):
        raise RuntimeError(f"IR output shape {out.shape}, expected (1, 1, {size}, {size})")
    if not np.isfinite(out).all() or out.min() < 0 or out.max() > 1:
        raise RuntimeError("IR output is not a probability map")
    if net is None:
        return None
    with torch.no_grad():
        ref = torch.sigmoid(net(torch.from_numpy(x))).numpy()
    return float(np.abs(ref - out).max())


def load_summary(state, run):
    """A run's summary: kept in model.pt, else its final.json, else a checkpoint's own progress
    (a run stopped before its end: steps and tiles, no validation figures)."""
    summary = state.get("summary")
    if summary is None and os.path.exists(os.path.join(run, "final.json")):
        with open(os.path.join(run, "final.json")) as f:
            summary = json.load(f)
    if summary is None and {"step", "elapsed", "tiles_seen"} <= set(state):
        from .train import progress_summary
        summary = {**progress_summary(state["step"], state["elapsed"], state["tiles_seen"]),
                   "stopped_at_checkpoint": True}
    return summary or {}


def manifest_fields(state, run, net, command):
    cfg = state["config"]
    summary = load_summary(state, run)
    valid = summary.get("valid", {})
    train_command = cfg.get("command") or ""
    if train_command.startswith("dustspot ") and not train_command.startswith("dustspot train"):
        # runs started with `python -m trainer.commands.train` before _command_line existed
        train_command = "dustspot train " + train_command[len("dustspot "):]
    data = cfg.get("data", {})
    return {
        "architecture": {"family": models.ARCHITECTURES[cfg["spec"]["arch"]]["family"],
                         "encoder": cfg["spec"]["encoder"],
                         "decoder_channels": cfg["spec"]["decoder_channels"],
                         "params": models.count_params(net),
                         **({"pruned": cfg["pruned"]} if cfg.get("pruned") else {})},
        "input": {"layout": "NCHW", "channels": "BGR", "range": [0, 1], "tile": cfg["tile"],
                  "multiple_of": models.MULTIPLE_OF},
        "output": "probability",
        "recommended": {"mode": "size", "working_size": cfg.get("working_size", 2016),
                        "threshold": float(valid.get("threshold", 0.5))},
        "precision": "fp16",
        "training": {"command": train_command, "export_command": command,
                     "data": {"kind": "synthetic dust (trainer.synth) composited on clean photos",
                              "background_sources": cfg.get("backgrounds"),
                              "sprites": cfg.get("sprites"),
                              "train_tiles": cfg.get("pool"), "valid_tiles": cfg.get("valid_pool"),
                              **{k: v for k, v in data.items() if k != "valid_background_files"}},   # runs before d8b03b3
                     "loss": cfg.get("loss"), "optimizer": cfg.get("optimizer"),
                     "batch": cfg.get("batch"), "steps": summary.get("step"),
                     "minutes": summary.get("minutes"), "tiles_seen": summary.get("tiles_seen"),
                     "tiles_per_s": summary.get("tiles_per_s"), "seed": cfg.get("seed"),
                     "threads": cfg.get("threads"), "amp": "bf16" if cfg.get("amp") else None,
                     "init": cfg.get("init"),            # warm start: the weights this run began from
                     # the recorded warm-start chain behind --init, then this run
                     "stages": stages.run_lineage(cfg) + [stages.describe_run(cfg, summary)]},
        "metrics": {"heldout_synthetic": {
            "tiles": cfg.get("valid_pool"),
            "threshold": valid.get("threshold"),
            "pixel_dice": valid.get("dice"), "pixel_precision": valid.get("precision"),
            "pixel_recall": valid.get("recall"), "object_recall": valid.get("object_recall"),
            "object_precision": valid.get("object_precision")}},
        "parent": None,
    }


def export(source, registry, name, version, command=None, make_latest=True, echo=print,
           int8=False, int8_latest=False, frames=None, working_sizes=settings.EXPORT_WORKING_SIZES,
           calibration_pool=None):
    """Convert SOURCE (run folder or checkpoint) and publish it as name:version in registry.

    With frames, the recommended working size / threshold / spot threshold / min area are
    chosen on those held-out frames first. With int8, also quantize (NNCF PTQ) and publish name:version-int8
    when its object recall and precision are within 1 point of the FP16 model's (on the
    frames with the recommended post-processing, else on the held-out synthetic tiles)."""
    from shared import registry as reg
    net, state, run = load_checkpoint(source)
    if int8:                    # before anything is published: a refusal after FP16 would block a retry
        int8_prerequisites(run, calibration_pool, on_frames=bool(frames))
        published = _published_fp16(registry, name, version, net, frames, echo)
        if published is not None:
            publish_int8(run, registry, name, version, published.xml, _descriptive(published.manifest),
                         make_latest=int8_latest, echo=echo, frames_dir=frames,
                         calibration_pool=calibration_pool)
            return published
    fields = manifest_fields(state, run, net, command)
    with tempfile.TemporaryDirectory() as tmp:
        xml = to_ir(net, os.path.join(tmp, "model.xml"))
        diff = check_ir(xml, net)
        echo(f"IR check: 1x3x{CHECK_SIZE}x{CHECK_SIZE} ok, max |ov - torch| = {diff:.4f}")
        fields["export_check"] = {"size": CHECK_SIZE, "max_abs_diff_vs_torch": diff}
        if frames:
            tune_on_frames(xml, frames, fields, echo, working_sizes)
        handle = reg.publish(registry, name, version, xml, fields, make_latest=make_latest)
        echo(f"published {name}:{version} -> {handle.folder}")
        if int8:
            publish_int8(run, registry, name, version, xml, fields, make_latest=int8_latest, echo=echo,
                         frames_dir=frames, calibration_pool=calibration_pool)
    return handle


SAME_NETWORK_MAX_DIFF = 0.01      # FP16 IR vs torch: 0.0002 for the same weights


def _published_fp16(registry, name, version, net, frames_dir, echo=print):
    """name:version when it is already published and is `net` (its IR computes what net does),
    so that --int8 can add the INT8 sibling of an existing version; None when it is not there."""
    from shared import registry as reg
    from shared.errors import ModelError
    if not any(r["name"] == name and r["version"] == version for r in reg.list_models(registry)):
        return None
    handle = reg.resolve(f"{name}:{version}", registry)        # verified: a corrupt version fails here
    diff = check_ir(handle.xml, net)
    if diff > SAME_NETWORK_MAX_DIFF:
        raise ModelError(f"{name}:{version} is already published and is another network "
                         f"(max |ov - torch| = {diff:.4f}); versions are immutable")
    tuned_on = handle.manifest.get("metrics", {}).get("heldout_frames", {}).get("folder")
    if tuned_on is None or frames_dir is None or os.path.abspath(frames_dir) != tuned_on:
        raise ModelError(f"{name}:{version} is already published; its INT8 is judged on the frames its "
                         f"settings were tuned on: give --frames {tuned_on or '(none recorded)'}")
    echo(f"{name}:{version} is already published and is this network (max |ov - torch| = {diff:.4f}): "
         f"adding {version}-int8 only, with its recommended settings")
    return handle


def _descriptive(manifest):
    """A published manifest without what publishing fills in."""
    return {k: v for k, v in manifest.items() if k not in ("name", "version", "created", "files")}


def candidate_frames(xml, fields, frames_dir, options=None):
    """Held-out frames' probability maps from an IR loaded exactly as the pipeline loads a model
    (with its recommended settings, unless `options` say otherwise)."""
    from shared import registry as reg

    from . import tune
    with tempfile.TemporaryDirectory() as scratch:
        candidate = reg.publish(scratch, "candidate", "0", xml, fields, make_latest=False)
        return tune.frame_probabilities(candidate.folder, frames_dir, options=options)


def tune_on_frames(xml, frames_dir, fields, echo=print, working_sizes=None):
    """Choose working size / threshold / spot threshold / min area on held-out frames; record
    them and the figures. Each working size gets its own tuned post-processing; the sizes are
    then compared by the same rule (clean-frame bound first, then the objective)."""
    from shared.errors import ModelError
    from shared.pipeline import SegmentOptions

    from . import tune
    sizes = list(working_sizes or [fields["recommended"]["working_size"]])
    results = {}
    for size in sizes:
        frames = candidate_frames(xml, fields, frames_dir, SegmentOptions(working_size=size))
        results[size] = tune.tune(frames)
        best = results[size]["best"]
        if best["object_recall"] is None:            # every frame clean: nothing to tune for
            raise ModelError(f"{frames_dir}: no frame with dust in its ground truth: the "
                             "post-processing cannot be tuned on clean frames alone")
        echo(f"working size {size}: objective {best['objective']:.4f}, object recall "
             f"{best['object_recall']:.3f}, precision {best['object_precision']:.3f}, Dice "
             f"{best['pixel_dice']:.3f}, clean {best['clean_fp_per_mp']} FP/MP")
    size = tune.best_of(results)
    result, best = results[size], results[size]["best"]
    fields["recommended"].update(working_size=size, threshold=best["threshold"],
                                 spot_threshold=best["spot_threshold"], min_area=best["min_area"], trim=best["trim"],
                                 neutral=best["neutral"])
    fields["metrics"]["heldout_frames"] = {
        "folder": os.path.abspath(frames_dir), "frames": len(result["frames"]), "working_size": size,
        "chosen_by": tune.__doc__.split("Objective: ")[1].split("\n\n")[0].replace("\n", " "),
        "clean_bound_met": result["clean_bound_met"], **best}
    if len(sizes) > 1:
        keys = ("threshold", "spot_threshold", "min_area", "objective", "object_recall",
                "object_precision", "pixel_dice", "clean_fp_per_mp")
        fields["metrics"]["heldout_frames"]["by_working_size"] = {
            str(w): {k: results[w]["best"][k] for k in keys} for w in sizes}
    echo(f"tuned on {len(result['frames'])} held-out frames: working size {size}, threshold "
         f"{best['threshold']}, spot threshold {best['spot_threshold']}, min area {best['min_area']}: "
         f"object recall {best['object_recall']:.3f}, precision {best['object_precision']:.3f}, "
         f"Dice {best['pixel_dice']:.3f}, clean {best['clean_fp_per_mp']} FP/MP")
    return result


def int8_prerequisites(run, calibration_pool=None, on_frames=False):
    """(calibration pool folder, its images) when INT8 can be made and judged: a calibration pool
    of at least quantize.CALIBRATION_TILES tiles and, unless it is judged on held-out frames,
    the run's validation pool; else a ModelError saying what is missing. Checked before anything
    is published (and before minutes of quantizing)."""
    from shared.errors import ModelError

    from . import data, quantize
    calibration_pool = calibration_pool or os.path.join(run, "pool-train")
    for needed in [calibration_pool] + ([] if on_frames else [os.path.join(run, "pool-valid")]):
        if not os.path.exists(os.path.join(needed, "images.npy")):
            raise ModelError(f"INT8 needs tiles from {needed} (a run's pool; --calibration-pool, or "
                             "--frames to judge it on held-out frames); nothing published")
    try:
        train_images, _ = data.load_pool(calibration_pool)
    except (OSError, ValueError) as exc:
        raise ModelError(f"INT8 calibration pool {calibration_pool} cannot be read ({exc}); nothing published") from None
    if len(train_images) < quantize.CALIBRATION_TILES:
        raise ModelError(f"INT8 calibrates on {quantize.CALIBRATION_TILES} tiles; {calibration_pool} holds only "
                         f"{len(train_images)}: give --calibration-pool with a pool of at least "
                         f"{quantize.CALIBRATION_TILES} tiles (a run trained with --pool >= "
                         f"{quantize.CALIBRATION_TILES}); nothing published")
    return calibration_pool, train_images


def publish_int8(run, registry, name, version, fp16_xml, fields, make_latest=False, echo=print,
                 frames_dir=None, calibration_pool=None):
    """Quantize, compare with FP16 (held-out frames with the recommended post-processing when
    given, else the held-out tile pool), publish as <version>-int8 if within quantize.MAX_DROP."""
    from shared import registry as reg
    from shared.errors import ModelError

    from . import data, quantize
    on_frames = bool(frames_dir and "heldout_frames" in fields["metrics"])
    calibration_pool, train_images = int8_prerequisites(run, calibration_pool, on_frames)
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(train_images), quantize.CALIBRATION_TILES, replace=False))
    threshold = fields["recommended"]["threshold"]
    with tempfile.TemporaryDirectory() as tmp:
        int8_xml = quantize.quantize(fp16_xml, np.asarray(train_images[pick]), os.path.join(tmp, "model.xml"))
        int8_fields = dict(fields, precision="int8", parent=f"{name}:{version}")
        if on_frames:
            check, int8_metrics = compare_on_frames(int8_xml, int8_fields, frames_dir)
            int8_fields["metrics"] = {**fields["metrics"],
                                      "heldout_frames": {**fields["metrics"]["heldout_frames"], **int8_metrics}}
        else:
            valid_images, valid_masks = data.load_pool(os.path.join(run, "pool-valid"))
            check = quantize.compare(fp16_xml, int8_xml, np.asarray(valid_images), np.asarray(valid_masks),
                                     threshold)
        echo(f"INT8 vs FP16 on {check['on']}: object recall "
             f"{check['int8']['object_recall']:.3f} vs {check['fp16']['object_recall']:.3f}, precision "
             f"{check['int8']['object_precision']:.3f} vs {check['fp16']['object_precision']:.3f}")
        reason = quantize.refusal(check)
        if reason:
            raise ModelError(f"INT8 not published: {reason}")
        int8_fields.update(quantization={"method": quantize.METHOD,
                                         "calibration_tiles": int(len(pick)),
                                         "calibration_source": os.path.abspath(calibration_pool),
                                         "check_vs_fp16": check})
        int8_fields.pop("export_check", None)
        handle = reg.publish(registry, name, f"{version}-int8", int8_xml, int8_fields, make_latest=make_latest)
    echo(f"published {name}:{version}-int8 -> {handle.folder}")
    return handle


def compare_on_frames(int8_xml, int8_fields, frames_dir):
    """INT8 on the held-out frames with the FP16 model's recommended post-processing."""
    from . import quantize, tune
    rec, fp16 = int8_fields["recommended"], int8_fields["metrics"]["heldout_frames"]
    int8 = tune.score(candidate_frames(int8_xml, int8_fields, frames_dir), rec["threshold"],
                      rec["spot_threshold"], rec["min_area"], trim=rec.get("trim", 0.0),
                      neutral=rec.get("neutral", 0.0))
    keys = ("object_recall", "object_precision", "pixel_dice", "clean_fp_per_mp")
    check = {"fp16": {k: fp16[k] for k in keys}, "int8": {k: int8[k] for k in keys},
             **quantize.drops(fp16, int8), "on": f"{fp16['frames']} held-out frames", **rec}
    return check, int8

"""`dustspot bench`: stage times, images/s, memory and GFLOP, as ratios against the seed
baseline (../shared/bench/seed_baseline.py) measured in the same invocation."""
import glob
import json
import os
import sys
import tempfile

import click


def _default_seed_script():
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(os.path.dirname(here), "shared", "bench", "seed_baseline.py")


@click.command("bench")
@click.option("--model", "model_ref", default=None, help="Model to benchmark (default: the bundled one).")
@click.option("--registry", "registry_root", default=None, envvar="DUSTSPOT_MODELS")
@click.option("--seed-model", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The seed's model as FP16 IR (UNet, EfficientNet-B1, smp's default decoder), "
                   "e.g. from `python -m trainer.seed_model OUT.xml`.")
@click.option("--seed-script", type=click.Path(exists=True, dir_okay=False), default=_default_seed_script(),
              show_default=True)
@click.option("--scans", "scans_dir", type=click.Path(exists=True, file_okay=False),
              default=None, help="Real scans for the default mode (e.g. ../shared/data/realdust-dev/images).")
@click.option("--tiff36", is_flag=True, help="Also native mode on a 36 MP 16-bit TIFF made from the first scan (peak memory).")
@click.option("--seconds", type=float, default=20.0, show_default=True, help="Time per timed section.")
@click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]), default=None)
@click.option("--json-out", type=click.Path(dir_okay=False), default=None, help="Also write the figures here.")
def bench(model_ref, registry_root, seed_model, seed_script, scans_dir, tiff36, seconds, precision, json_out):
    """Benchmark the pipeline against the seed prototype on this machine."""
    import cv2
    import numpy as np

    from .. import bench as b
    from ..engine import EngineSettings
    from ..pipeline import SegmentOptions, open_session, process_scan
    from ..registry import resolve

    handle = resolve(model_ref, registry_root)
    settings = EngineSettings(precision=precision)
    figures = {"model": handle.describe(), "machine": {"cpus": os.cpu_count()}}

    # A. The seed's own benchmark: random 4912x7360 -> 2016 square, 81 tiles of 224.
    click.echo("seed geometry on the seed's benchmark input ...", err=True)
    seed_input = (np.random.default_rng(0).random((4912, 7360, 3), np.float32) * 255).astype(np.uint8)
    seed_session = open_session(model_ref, SegmentOptions(mode="square", working_size=2016, tile=224, overlap=0),
                                settings, registry_root)
    ours = b.time_segment(seed_input, seed_session, seconds)
    del seed_session
    same_model = b.seed_baseline(seed_script, handle.xml, seconds)
    figures["seed_geometry"] = {"dustspot_s": round(ours["mean_s"], 4), "stages_s": ours["stages_s"],
                                "seed_baseline_same_model_s": same_model,
                                "speedup_same_model": round(same_model / ours["mean_s"], 2)}
    if seed_model:
        seed_s = b.seed_baseline(seed_script, seed_model, seconds)
        figures["seed_geometry"].update(seed_baseline_seed_model_s=seed_s,
                                        speedup_vs_seed=round(seed_s / ours["mean_s"], 2))
    gflop_224 = b.model_gflop(handle.xml, 224)
    figures["gflop"] = {"per_224_tile": round(gflop_224, 2), "seed_geometry_image": round(81 * gflop_224, 1),
                        "achieved_gflop_s_seed_geometry": round(81 * gflop_224 / ours["stages_s"]["infer"], 1)}
    if seed_model:
        figures["gflop"]["seed_model_per_224_tile"] = round(b.model_gflop(seed_model, 224), 2)

    # B. The default mode on real scans, from disk to .mask.png + .json.
    if scans_dir:
        click.echo("default mode on real scans ...", err=True)
        session = open_session(model_ref, SegmentOptions(), settings, registry_root)
        files = sorted(f for f in glob.glob(os.path.join(scans_dir, "*")) if os.path.isfile(f))
        with tempfile.TemporaryDirectory() as out:
            totals, core = [], []
            for rnd in range(2):                                  # round 0 warms caches
                for path in files:
                    report = process_scan(os.path.abspath(path), out, os.path.basename(path), session)
                    if rnd:
                        t = report["timings"]
                        totals.append(t["total"])
                        core.append(t["read"] + t["decode"] + t["infer"])
            stages = b.reports_stage_means(out)
        gflop_tile = b.model_gflop(handle.xml, session.options.tile)
        figures["default_mode"] = {
            "scans": len(files), "options": {"size": session.options.working_size, "tile": session.options.tile,
                                             "overlap": session.options.overlap},
            "s_per_scan": round(float(np.mean(totals)), 4), "stages_s": stages,
            "total_over_decode_plus_infer": round(float(np.sum(totals) / np.sum(core)), 3),
            "gflop_per_tile": round(gflop_tile, 2)}
        cli = [sys.executable, "-m", "shared.cli", "segment", scans_dir, "-q"]
        if model_ref:
            cli += ["--model", model_ref]
        if registry_root:
            cli += ["--registry", registry_root]
        with tempfile.TemporaryDirectory() as out:
            run = b.run_measured(cli + ["--out", out])
        figures["default_mode"]["cli_s_per_scan_incl_startup"] = round(run["seconds"] / len(files), 3)
        figures["default_mode"]["cli_peak_rss_mb"] = round(run["peak_rss_mb"], 1)
        figures["default_mode"]["seed_baseline_same_run_s"] = same_model

    # C. Native mode on a 36 MP 16-bit TIFF: peak memory.
    if tiff36 and scans_dir:
        click.echo("native mode on a 36 MP 16-bit TIFF ...", err=True)
        with tempfile.TemporaryDirectory() as work:
            first = sorted(glob.glob(os.path.join(scans_dir, "*")))[0]
            img = cv2.resize(cv2.imread(first), (7360, 4912), interpolation=cv2.INTER_CUBIC)
            tiff = os.path.join(work, "scan36.tif")
            cv2.imwrite(tiff, img.astype(np.uint16) * 257)
            del img
            cmd = [sys.executable, "-m", "shared.cli", "segment", tiff, "--out", os.path.join(work, "out"),
                   "--native", "-q"] + (["--model", model_ref] if model_ref else []) + \
                  (["--registry", registry_root] if registry_root else [])
            run = b.run_measured(cmd)
            report = json.load(open(os.path.join(work, "out", "scan36.json")))
        figures["native_36mp_tiff16"] = {"peak_rss_mb": round(run["peak_rss_mb"], 1),
                                         "seconds": round(run["seconds"], 2), "timings": report["timings"],
                                         "tiles": report["settings"]["tiles"]}

    text = json.dumps(figures, indent=1)
    click.echo(text)
    if json_out:
        with open(json_out, "w") as f:
            f.write(text + "\n")

"""`dustspot evaluate`: segment a set of scans and score the masks against ground truth."""
import json
import os
import tempfile

import click

from .options import pipeline_options, split_pipeline_kwargs


@click.command("evaluate")
@click.argument("images", type=click.Path(exists=True, file_okay=False))
@click.argument("truth", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Keep the masks here (default: a temporary folder).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@pipeline_options
def evaluate(images, truth, out_dir, as_json, **kwargs):
    """Segment IMAGES and score them against TRUTH/<stem>.png (255 dust, 128 don't care, 0 clean).

    Metrics as ../shared/eval/score.py: pixel precision/recall/Dice, object recall (by extent),
    object precision, false-positive spots per megapixel on clean images.
    """
    import cv2

    from ..errors import DustspotError
    from ..metrics import DustScore
    from ..pipeline import open_session, process_scan
    from .segment import collect_inputs

    model_ref, registry_root, options, settings = split_pipeline_kwargs(kwargs)
    scans = collect_inputs([images], out_dir or "")
    with tempfile.TemporaryDirectory() as scratch:
        out_dir = out_dir or scratch
        try:
            session = open_session(model_ref, options, settings, registry_root)
        except DustspotError as exc:
            raise click.ClickException(str(exc)) from None
        score, problems = DustScore(), []
        for path, rel in scans:
            stem = os.path.splitext(rel)[0]
            gt_path = os.path.join(truth, stem + ".png")
            if not os.path.exists(gt_path):
                problems.append(f"{rel}: no ground truth {gt_path}")
                continue
            try:
                process_scan(os.path.abspath(path), out_dir, rel, session)
            except DustspotError as exc:
                problems.append(str(exc))
                continue
            gt = cv2.imread(gt_path, cv2.IMREAD_GRAYSCALE)
            pred = cv2.imread(os.path.join(out_dir, stem + ".mask.png"), cv2.IMREAD_GRAYSCALE)
            score.add(gt, pred)
    result = {**score.result(), "images": len(scans), "problems": problems,
              "model": session.model, "threshold": session.options.threshold,
              "spot_threshold": session.options.spot_threshold, "min_area": session.options.min_area}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            click.echo(f"{k}: {round(v, 4) if isinstance(v, float) else v}")

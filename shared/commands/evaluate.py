"""`dustspot evaluate`: segment a set of scans and score the masks against ground truth."""
import json
import os
import sys
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

    A ground truth that cannot be scored (missing, not an image, not 0/128/255 in one channel,
    another size than its scan) is a problem naming it and why; that scan is not scored. Exits
    with status 1 when there were problems or nothing was scored. Metrics of dusty images are
    null when no dusty image was scored.
    """
    import cv2

    from ..errors import DustspotError
    from ..metrics import DustScore, truth_problem
    from ..pipeline import open_session, process_scan
    from ..storage import printable
    from .segment import collect_inputs

    model_ref, registry_root, options, settings = split_pipeline_kwargs(kwargs)
    scans = collect_inputs([images], out_dir or "")
    scored = 0
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
            gt = cv2.imread(gt_path, cv2.IMREAD_UNCHANGED)     # as stored: a colour mask is refused
            if gt is not None and gt.ndim == 3 and gt.shape[2] in (3, 4) \
                    and (gt[..., :3] == gt[..., :1]).all():
                gt = gt[..., 0]                               # grey stored as RGB: one channel
            reason = truth_problem(gt)
            if reason:                                        # before minutes of segmenting
                problems.append(f"{rel}: ground truth {gt_path} {reason}; not scored")
                continue
            try:
                process_scan(os.path.abspath(path), out_dir, rel, session)
            except DustspotError as exc:
                problems.append(str(exc))
                continue
            pred = cv2.imread(os.path.join(out_dir, stem + ".mask.png"), cv2.IMREAD_GRAYSCALE)
            if pred is None:
                problems.append(f"{rel}: no mask was written; not scored")
                continue
            if gt.shape != pred.shape:
                problems.append(f"{rel}: ground truth {gt_path} is {gt.shape[1]}x{gt.shape[0]} px, the scan "
                                f"{pred.shape[1]}x{pred.shape[0]} (as displayed); not scored")
                continue
            score.add(gt, pred)
            scored += 1
    if not scored:
        problems.append(f"nothing scored: no scan of {images} ({len(scans)} found) had usable ground truth "
                        f"in {truth}")
    result = {**score.result(), "images": len(scans), "scored": scored,
              "dusty_images": score.dusty_images, "clean_images": score.clean_images, "problems": problems,
              "model": session.model, "threshold": session.options.threshold,
              "spot_threshold": session.options.spot_threshold, "min_area": session.options.min_area,
              "trim": session.options.trim, "neutral": session.options.neutral}
    if as_json:
        click.echo(json.dumps(result))
    else:
        for k, v in result.items():
            if k != "problems":
                click.echo(f"{k}: {round(v, 4) if isinstance(v, float) else v}")
    for problem in problems:
        click.echo(printable(f"problem: {problem}"), err=True)
    sys.exit(1 if problems else 0)

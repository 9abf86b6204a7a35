"""`dustspot segment`: the embedded runner. Files and folders in, masks and reports out.

No Redis: scans are processed here, by this process or by --workers local processes
(spawned, each compiling its own model: a compiled model does not survive a fork).
"""
import os
import sys
import time

import click

from .. import defaults
from ..outputs import is_output_name
from .options import pipeline_options, split_pipeline_kwargs


def collect_inputs(inputs, out_dir: str) -> list[tuple[str, str]]:
    """(path, relative name) for every scan: files as given, folders walked recursively.

    Inside folders only image extensions are taken (hidden files, the output folder and
    dustspot's own outputs are skipped, so an output folder inside the input folder is not
    read back); a file named explicitly is always tried, so a bad one is reported.
    """
    out_real = os.path.realpath(out_dir)
    found = []
    for item in inputs:
        if os.path.isdir(item):
            for folder, dirs, files in os.walk(item):
                dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                                 and os.path.realpath(os.path.join(folder, d)) != out_real)
                for name in sorted(files):
                    if name.startswith(".") or not name.lower().endswith(defaults.IMAGE_EXTENSIONS):
                        continue
                    if is_output_name(name):
                        continue
                    path = os.path.join(folder, name)
                    found.append((path, os.path.relpath(path, item).replace(os.sep, "/")))
        else:
            found.append((item, os.path.basename(item)))
    return found


def split_output_clashes(scans: list[tuple[str, str]]) -> tuple[list, list]:
    """(kept scans, refused results): the first of scans sharing an output stem keeps it."""
    from ..storage import claim_outputs, printable

    owners, kept, refused = {}, [], []
    for path, relative in scans:
        reason = claim_outputs(owners, relative, path)
        if reason:
            refused.append((relative, None, printable(f"{path}: {reason}")))
        else:
            kept.append((path, relative))
    return kept, refused


# Per-process state for --workers: the session is built once in each worker process.
_SESSION = None


def _init_session(model_ref, registry_root, options, settings):
    """Build this process's session.  In a pool worker an exception here would make the pool
    start a new worker forever, so the error is kept and every scan reports it instead."""
    global _SESSION
    from ..errors import DustspotError
    from ..pipeline import open_session
    try:
        _SESSION = open_session(model_ref, options, settings, registry_root)
    except DustspotError as exc:
        _SESSION = exc
    except Exception as exc:
        _SESSION = DustspotError(f"cannot open the model session ({type(exc).__name__}: {exc})")


def _run_one(task):
    """Process one scan; never raises: returns (relative name, report or None, error)."""
    from ..errors import DustspotError
    from ..pipeline import process_scan

    path, relative, out_dir = task
    if isinstance(_SESSION, Exception):
        return relative, None, str(_SESSION)
    try:
        report = process_scan(os.path.abspath(path), out_dir, relative, _SESSION)
        return relative, {"spots": report["spot_count"], "seconds": report["timings"]["total"]}, None
    except DustspotError as exc:
        return relative, None, str(exc)
    except Exception as exc:                      # a bug must not stop the batch either
        return relative, None, f"{path}: internal error ({type(exc).__name__}: {exc})"


@click.command("segment")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: <name>.mask.png and <name>.json per scan, relative paths kept.")
@click.option("--workers", type=click.IntRange(1), default=1, show_default=True,
              help="Local processes, each with its own compiled model.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@pipeline_options
def segment(inputs, out_dir, workers, quiet, **kwargs):
    """Find dust in scans (files or folders) and write a mask and report per scan.

    Exits with status 1 if any scan failed; the others are processed regardless.
    """
    from tqdm import tqdm

    from ..engine import cpu_count
    from ..errors import DustspotError
    from ..storage import printable

    model_ref, registry_root, options, settings = split_pipeline_kwargs(kwargs)
    if settings.threads is None:
        settings.threads = max(1, cpu_count() // workers)
    scans, clashes = split_output_clashes(collect_inputs(inputs, out_dir))
    tasks = [(path, rel, out_dir) for path, rel in scans]
    if not tasks:
        raise click.ClickException("no scans found in " + ", ".join(inputs))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"cannot create the output folder {out_dir}: {exc.strerror}")

    started = time.perf_counter()
    results = list(clashes)
    bar = tqdm(total=len(tasks), unit="scan", disable=quiet, file=sys.stderr)
    try:
        if workers == 1:
            _init_session(model_ref, registry_root, options, settings)
            if isinstance(_SESSION, Exception):
                raise _SESSION
            for task in tasks:
                results.append(_run_one(task))
                bar.update()
        else:
            import multiprocessing

            # Fail fast (bad model reference, options the model cannot take) before the pool.
            from ..registry import resolve
            options.resolved(resolve(model_ref, registry_root).manifest)
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(workers, _init_session, (model_ref, registry_root, options, settings)) as pool:
                for result in pool.imap_unordered(_run_one, tasks):
                    results.append(result)
                    bar.update()
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        bar.close()

    elapsed = time.perf_counter() - started
    if options.overlay:                  # thumbnails exist: the batch report costs nothing more
        from ..report import write_report
        write_report(out_dir)
    failed = [(rel, err) for rel, ok, err in results if ok is None]
    done = [ok for _, ok, _ in results if ok is not None]
    click.echo(f"{len(done)} of {len(results)} scans done, {len(failed)} failed, "
               f"{sum(d['spots'] for d in done)} spots, {elapsed:.1f} s "
               f"({elapsed / max(len(results), 1):.2f} s/scan) -> {out_dir}")
    for rel, err in sorted(failed):
        click.echo(printable(f"FAILED {rel}: {err}"), err=True)
    sys.exit(1 if failed else 0)

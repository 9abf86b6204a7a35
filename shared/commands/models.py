"""`dustspot models`: look into the model registry (list, show, promote)."""
import json

import click


@click.group("models")
@click.option("--registry", "registry_root", default=None, envvar="DUSTSPOT_MODELS",
              help="Registry root (default: the bundled models/).")
@click.pass_context
def models(ctx, registry_root):
    """List, inspect and promote models in the registry."""
    from .. import defaults
    ctx.obj = registry_root or defaults.models_root()


@models.command("list")
@click.pass_obj
def list_(root):
    """One line per model version; * marks what `latest` resolves to."""
    from ..registry import list_models
    rows = list_models(root)
    if not rows:
        click.echo(f"no models in {root}")
    for row in rows:
        click.echo(f"{'*' if row['latest'] else ' '} {row['name']}:{row['version']}  "
                   f"{row['precision'] or '?'}  {row['created'] or ''}")


@models.command("show")
@click.argument("ref", required=False)
@click.pass_obj
def show(root, ref):
    """Print a model's manifest (after verifying its files' sha256)."""
    from ..errors import ModelError
    from ..registry import resolve
    try:
        handle = resolve(ref, root)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(handle.manifest, indent=2, sort_keys=True))


@models.command("promote")
@click.argument("ref")
@click.pass_obj
def promote(root, ref):
    """Point NAME's `latest` at VERSION (REF is NAME:VERSION)."""
    from ..errors import ModelError
    from ..registry import promote as do_promote
    name, _, version = ref.partition(":")
    if not version:
        raise click.UsageError("give NAME:VERSION")
    try:
        do_promote(root, name, version)
    except ModelError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: latest -> {version}")

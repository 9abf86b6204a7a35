"""`dustspot models`: look into the model registry (list, show, promote)."""
import json

import click


@click.group("models")
@click.option("--registry", "registry_root", default=None, envvar="DUSTSPOT_MODELS",
              help="Registry root (default: the bundled models/).")
@click.pass_context
def models(ctx, registry_root):
    """List, inspect, publish and promote models (a folder or an s3:// prefix)."""
    from .. import defaults
    ctx.obj = registry_root or defaults.models_root()


@models.command("list")
@click.pass_obj
def list_(root):
    """One line per model version; * marks what `latest` resolves to."""
    from ..errors import DustspotError
    from ..registry import list_models
    skipped = []
    try:
        rows = list_models(root, skipped)
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    for exc in skipped:
        click.echo(f"warning: skipped {exc}", err=True)
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
    from ..errors import DustspotError
    from ..registry import resolve
    try:
        handle = resolve(ref, root)
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(handle.manifest, indent=2, sort_keys=True))


@models.command("publish")
@click.argument("model_xml", type=click.Path(exists=True, dir_okay=False))
@click.option("--name", required=True, help="Model name in the registry.")
@click.option("--version", "version", required=True, help="New, immutable version string.")
@click.option("--manifest", "manifest_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON file with the descriptive manifest fields (architecture, input, recommended, "
                   "precision, training, metrics, parent); a model folder's manifest.json works.")
@click.option("--latest/--no-latest", default=True, show_default=True, help="Point `latest` at it.")
@click.pass_obj
def publish(root, model_xml, name, version, manifest_path, latest):
    """Copy MODEL_XML (+ its .bin) into the registry as NAME:VERSION with a hashed manifest."""
    from ..errors import DustspotError
    from ..registry import publish as do_publish
    fields = {}
    if manifest_path:
        try:
            with open(manifest_path, "rb") as f:
                fields = json.loads(f.read())
        except OSError as exc:
            raise click.ClickException(f"{manifest_path}: cannot read ({exc.strerror or exc})") from None
        except ValueError as exc:
            raise click.ClickException(f"{manifest_path}: not JSON ({exc})") from None
        if not isinstance(fields, dict):
            raise click.ClickException(f"{manifest_path}: must hold a JSON object of manifest fields, "
                                       f"not a {type(fields).__name__}")
        for generated in ("name", "version", "created", "files"):
            fields.pop(generated, None)
    try:
        handle = do_publish(root, name, version, model_xml, fields, make_latest=latest)
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"published {handle.name}:{handle.version} ({handle.sha256[:12]}) in {root}")


@models.command("promote")
@click.argument("ref")
@click.pass_obj
def promote(root, ref):
    """Point NAME's `latest` at VERSION (REF is NAME:VERSION)."""
    from ..errors import DustspotError
    from ..registry import promote as do_promote
    name, _, version = ref.partition(":")
    if not version:
        raise click.UsageError("give NAME:VERSION")
    try:
        do_promote(root, name, version)
    except DustspotError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{name}: latest -> {version}")

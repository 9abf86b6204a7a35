"""The `dustspot` command: a click group whose sub-commands load on first use.

One command per module. The table below names where each lives, so `dustspot --help`
and a worker install (no torch) never import the trainer's heavy dependencies; each
command module keeps its heavy imports inside the command function.
"""
import importlib
import logging

import click

from . import __version__

COMMANDS = {
    "segment": "shared.commands.segment:segment",
    "models": "shared.commands.models:models",
    "enqueue": "producer.commands.enqueue:enqueue",
    "status": "producer.commands.status:status",
    "retry-failed": "producer.commands.retry_failed:retry_failed",
    "worker": "worker.commands.worker:worker",
    "dashboard": "shared.commands.dashboard:dashboard",
    "evaluate": "shared.commands.evaluate:evaluate",
    "bench": "shared.commands.bench:bench",
    "rethreshold": "shared.commands.rethreshold:rethreshold",
    "select": "shared.commands.select:select",
    "report": "shared.commands.report:report",
    "export-cvat": "shared.commands.export_cvat:export_cvat",
    "prepare": "trainer.commands.prepare:prepare",
    "synth": "trainer.commands.synth:synth",
    "train": "trainer.commands.train:train",
    "prune": "trainer.commands.prune:prune",
    "export": "trainer.commands.export:export",
    "tune": "trainer.commands.tune:tune",
}


# Optional packages and the extra that installs them.
EXTRA_OF = {"torch": "trainer", "torchvision": "trainer", "segmentation_models_pytorch": "trainer",
            "nncf": "trainer", "skimage": "trainer", "torch_pruning": "trainer", "redis": "worker", "rq": "worker",
            "rq_dashboard": "worker", "boto3": "worker", "botocore": "worker"}


class _FriendlyImports(click.Command):
    """Commands import heavy packages inside their function; a missing one gets a hint."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            extra = EXTRA_OF.get((exc.name or "").split(".")[0])
            if extra is None:
                raise
            raise click.ClickException(f"`dustspot {ctx.info_name}` needs {exc.name}, which is not "
                                       f"installed: pip install 'dustspot[{extra}]'") from None


def _unavailable(name: str, exc: ImportError) -> click.Command:
    """Stands in for a command whose module cannot be imported here: says what to install."""
    missing = (exc.name or "").split(".")[0]
    extra = EXTRA_OF.get(missing, "trainer")

    @click.command(name, help=f"(unavailable: {exc})")
    def unavailable():
        raise click.ClickException(f"`dustspot {name}` needs {missing or 'a missing package'}, which is "
                                   f"not installed: pip install 'dustspot[{extra}]'")
    return unavailable


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module), attr)
            if type(command) is click.Command:
                command.__class__ = _FriendlyImports
            return command
        except ImportError as exc:
            return _unavailable(name, exc)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dustspot")
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose):
    """dustspot: find dust, hairs and scratches on high-resolution scans."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    main()

"""Click commands of the trainer; options more than one of them takes live here."""
import click


def _generator_settings(ctx, param, texts):
    from ..synth import generator_setting  # the generator's own check, one place
    try:
        return dict(generator_setting(text) for text in texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def generator_option(what):
    """--generator NAME=SHARE (repeatable) -> {NAME: share}: `what` is drawn with that share
    instead of trainer.synth's default."""
    return click.option(
        "--generator", "generator", multiple=True, metavar="NAME=SHARE", callback=_generator_settings,
        help=f"draw {what} with this share instead of trainer.synth's default (repeatable; NAME "
             "one of synth.GENERATOR_SHARES, e.g. DARK_SCENE_PROB=0.7; DARK:NAME=SHARE sets one of "
             "synth.DARK_SHARES for dark dust alone, e.g. DARK:FAINT_PROB=0)")

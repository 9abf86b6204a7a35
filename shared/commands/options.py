"""Click options shared by the commands that run the pipeline (segment, worker, bench)."""
import click

from .. import defaults, option_rules


class Rule(click.ParamType):
    """A number checked by its option's rule in shared.option_rules: the flag, a job payload and
    a model's recommendation accept and refuse the same values, with the same words."""

    def __init__(self, option: str, number=int):
        self.option, self.number = option, number
        self.name = "number" if number is float else "integer"

    def convert(self, value, param, ctx):
        if isinstance(value, str):
            try:
                value = self.number(value)
            except ValueError:
                self.fail(f"{value!r} is not {'a number' if self.number is float else 'a whole number'}", param, ctx)
        test, what = option_rules.RULES[self.option]
        if not test(value):
            self.fail(f"{value} is not {what}", param, ctx)
        return value


def rule_option(*decls, rule: str, number=int, help: str, **kwargs):
    """click.option of type Rule(rule); its help ends with the range the rule accepts."""
    return click.option(*decls, type=Rule(rule, number), help=f"{help} {option_rules.RULES[rule][1].capitalize()}.",
                        **kwargs)


def pipeline_options(func):
    """Model, working resolution, tiling, threshold, outputs and engine flags."""
    decorators = [
        click.option("--model", "model_ref", default=None, envvar="DUSTSPOT_MODEL",
                     help=f"Model reference: name[:version] in the registry, or a model folder/.xml "
                          f"(default: {defaults.MODEL}, its latest version)."),
        click.option("--registry", "registry_root", default=None, envvar="DUSTSPOT_MODELS",
                     help="Model registry root (default: the bundled models/)."),
        rule_option("--size", "size", rule="working_size", default=None,
                    help="Working resolution: long side N px, aspect kept (default: the model's, "
                         f"else {defaults.WORKING_SIZE})."),
        rule_option("--square", "square", rule="working_size", default=None,
                    help="Working resolution: N x N (the seed's geometry: --square 2016 --tile 224 --overlap 0)."),
        click.option("--native", is_flag=True, help="No resize: infer at the scan's own resolution."),
        rule_option("--tile", rule="tile", default=None, help=f"Tile side in px (default {defaults.TILE})."),
        rule_option("--overlap", rule="overlap", default=None,
                    help=f"Overlap between neighbouring tiles in px (default {defaults.OVERLAP})."),
        rule_option("--threshold", rule="threshold", number=float, default=None,
                    help="Probability at or above which a pixel is dust (default: the model's recommendation)."),
        rule_option("--spot-threshold", rule="spot_threshold", number=float, default=None,
                    help="Keep only spots with at least one pixel this probable (hysteresis; default: "
                         "the model's recommendation, else the threshold)."),
        rule_option("--min-area", rule="min_area", default=None,
                    help="Drop spots smaller than this many native pixels (default: the model's "
                         "recommendation, else 1)."),
        rule_option("--trim", rule="trim", number=float, default=None,
                    help="Narrow each spot to the pixels whose contrast against the scan around it is at "
                         "least this share of the spot's local peak (0: off; default: the model's "
                         f"recommendation, else {defaults.TRIM}; models tuned before the trim: 0)."),
        rule_option("--neutral", rule="neutral", number=float, default=None,
                    help="Drop spots whose colour departs from every blend of the scan around them with a "
                         "grey (dust's own colour) by more than this many levels of 255 (0: off; default: "
                         f"the model's recommendation, else {defaults.NEUTRAL:g}; models tuned before it: 0)."),
        click.option("--overlay", is_flag=True, help="Also write <name>.overlay.jpg (reduced preview, spots circled)."),
        click.option("--prob", is_flag=True, help="Also write <name>.prob.png (8-bit probability map)."),
        click.option("--inpaint", is_flag=True,
                     help="Also write <name>.clean.<ext>: the scan with every spot inpainted, same format and depth."),
        rule_option("--max-pixels", rule="max_pixels", default=defaults.MAX_PIXELS, show_default=True,
                    help="Refuse scans with more pixels than this (checked from the header)."),
        click.option("--threads", type=click.IntRange(1), default=None, envvar="DUSTSPOT_THREADS",
                     help="Inference threads per process (default: cores / processes); env DUSTSPOT_THREADS."),
        click.option("--precision", type=click.Choice(["f32", "bf16", "f16"]), default=None,
                     help="Inference precision (default: the CPU's best)."),
        click.option("--batch", type=click.IntRange(1), default=defaults.BATCH, show_default=True,
                     help="Tiles per inference request."),
    ]
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def build_options(size, square, native, tile, overlap, threshold, overlay, prob, max_pixels, inpaint=False,
                  spot_threshold=None, min_area=None, trim=None, neutral=None):
    """SegmentOptions from the CLI flags (None = the model's or the default value)."""
    from ..pipeline import SegmentOptions

    chosen = [flag for flag, on in (("--size", size), ("--square", square), ("--native", native)) if on]
    if len(chosen) > 1:
        raise click.UsageError(f"choose one working resolution, not {' and '.join(chosen)}")
    mode = "native" if native else "square" if square else "size" if size else None
    return SegmentOptions(mode=mode, working_size=square or size, tile=tile, overlap=overlap,
                          threshold=threshold, overlay=overlay, prob=prob, max_pixels=max_pixels,
                          inpaint=inpaint, spot_threshold=spot_threshold, min_area=min_area, trim=trim,
                          neutral=neutral)


def split_pipeline_kwargs(kwargs: dict):
    """Pop the pipeline flags out of a command's kwargs: (model_ref, registry, options, engine settings)."""
    from ..engine import EngineSettings

    options = build_options(*(kwargs.pop(k) for k in ("size", "square", "native", "tile", "overlap",
                                                       "threshold", "overlay", "prob", "max_pixels", "inpaint",
                                                       "spot_threshold", "min_area", "trim", "neutral")))
    settings = EngineSettings(precision=kwargs.pop("precision"), threads=kwargs.pop("threads"),
                              batch=kwargs.pop("batch"))
    return kwargs.pop("model_ref"), kwargs.pop("registry_root"), options, settings

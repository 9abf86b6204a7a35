"""Types and ranges of the pipeline options: one rule set for CLI flags, job payloads and a
model's recommendation, so that a value refused in one place is refused everywhere.

Kept free of heavy imports: the producer checks a job's options without OpenVINO installed.
"""
import math

from . import defaults
from .errors import DustspotError
from .storage import printable


class OptionError(DustspotError):
    """A pipeline option of the wrong type or out of its range."""

    def __init__(self, name: str, value, what: str):
        self.name, self.value, self.what = name, value, what
        super().__init__(f"option {name}={printable(repr(value))}: must be {what}")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(low: int, high: int):
    return (lambda v: _is_int(v) and low <= v <= high), f"a whole number from {low} to {_readable(high)}"


def _readable(number: int) -> str:
    """2^62, not 4611686018427387904: a bound that only keeps the arithmetic finite reads as one."""
    return f"2^{number.bit_length() - 1}" if number >= 2 ** 32 and number & (number - 1) == 0 else str(number)


# name -> (test, what a good value is). The CLI flags are checked by these too (commands.options.Rule).
RULES = {
    "mode": ((lambda v: v in defaults.MODES), f"one of {', '.join(defaults.MODES)}"),
    "working_size": _whole(32, defaults.MAX_WORKING_SIZE),
    "tile": _whole(32, defaults.MAX_TILE),
    "overlap": _whole(0, defaults.MAX_TILE - 1),
    "margin": _whole(0, defaults.MAX_TILE),
    "min_area": _whole(1, defaults.MAX_PIXELS),
    "max_pixels": _whole(1, 2 ** 62),
    "threshold": ((lambda v: _is_number(v) and 0 < v <= 1), "a number in (0, 1]"),
    "spot_threshold": ((lambda v: _is_number(v) and 0 <= v <= 1), "a number in [0, 1]"),
    "trim": ((lambda v: _is_number(v) and 0 <= v < 1), "a number in [0, 1)"),
    "neutral": ((lambda v: _is_number(v) and 0 <= v <= 255), "a number of levels in [0, 255]"),
    "overlay": ((lambda v: isinstance(v, bool)), "true or false"),
    "prob": ((lambda v: isinstance(v, bool)), "true or false"),
    "inpaint": ((lambda v: isinstance(v, bool)), "true or false"),
}


def check_option_values(values: dict) -> dict:
    """OptionError naming the first value in `values` that breaks its rule; None means unset.

    Names without a rule are the caller's business (a job payload refuses them first)."""
    for name, value in values.items():
        rule = RULES.get(name)
        if value is not None and rule is not None and not rule[0](value):
            raise OptionError(name, value, rule[1])
    tile, overlap = values.get("tile"), values.get("overlap")
    # at most half the tile: each pixel is inferred at most 4 times. A larger overlap on a
    # small tile makes millions of tiles of one working image (a worker's memory and hours).
    if tile is not None and overlap is not None and overlap > tile // 2:
        raise OptionError("overlap", overlap, f"at most half the tile ({tile // 2})")
    return values

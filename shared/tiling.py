"""Cutting a working image into overlapping tiles and blending tile outputs back.

Tiles start at evenly spread positions so the last tile ends exactly at the image edge
(no padding unless the image is smaller than a tile). Blending weights along each axis
form a partition of unity: in an overlap, the earlier tile's weight ramps down exactly as
the later tile's ramps up, after a margin where the tile's own output is ignored (there
a convolution saw zero padding instead of image). The merged map is therefore a plain
weighted sum, with no normalisation pass and no per-pixel weight image, and for a fully
convolutional model it matches whole-image inference wherever the margin covers the
model's padding effects. With overlap 0 every weight is 1: the seed's hard tiling.
"""
import math
from dataclasses import dataclass

import numpy as np


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets along one axis: evenly spread, first at 0, last ending at `length`."""
    if length <= tile:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be in [0, tile={tile})")
    count = math.ceil((length - overlap) / (tile - overlap))
    return [round(i * (length - tile) / (count - 1)) for i in range(count)]


def _ramp(tile: int, overlap: int, margin: int, rising: bool) -> np.ndarray:
    """Weights for one overlapping edge: 0 in the margin, linear across the rest."""
    if overlap <= 0:
        return np.ones(tile, np.float32)
    margin = min(margin, (overlap - 1) // 2)
    pos = np.arange(tile, dtype=np.float32) + 0.5
    ramp = np.clip((pos - margin) / (overlap - 2 * margin), 0.0, 1.0)
    return ramp if rising else ramp[::-1].copy()


def axis_weights(starts: list[int], length: int, tile: int, margin: int) -> list[np.ndarray]:
    """One weight vector per tile along an axis (each `min(tile, length)` long)."""
    size = min(tile, length)
    weights = []
    for i, start in enumerate(starts):
        w = np.ones(size, np.float32)
        if i > 0:                                         # overlap with the previous tile
            w *= _ramp(size, starts[i - 1] + size - start, margin, rising=True)
        if i < len(starts) - 1:                           # overlap with the next tile
            w *= _ramp(size, start + size - starts[i + 1], margin, rising=False)
        weights.append(w)
    return weights


@dataclass(frozen=True)
class Tile:
    y: int
    x: int
    weight_y: np.ndarray
    weight_x: np.ndarray

    @property
    def uniform(self) -> bool:
        """True when every blending weight is 1 (no overlap): output is copied as is."""
        return bool(self.weight_y.min() == 1.0 and self.weight_x.min() == 1.0)


class TileGrid:
    """The tiles covering an image of `height` x `width` (padded up to one tile if smaller)."""

    def __init__(self, height: int, width: int, tile: int, overlap: int, margin: int = 0):
        if tile < 1:
            raise ValueError("tile must be positive")
        self.height, self.width, self.tile, self.overlap = height, width, tile, overlap
        ys = tile_starts(height, tile, overlap)
        xs = tile_starts(width, tile, overlap)
        wys = axis_weights(ys, height, tile, margin)
        wxs = axis_weights(xs, width, tile, margin)
        self.tiles = [Tile(y, x, wy, wx) for y, wy in zip(ys, wys) for x, wx in zip(xs, wxs)]

    def __len__(self) -> int:
        return len(self.tiles)

    @property
    def padded_shape(self) -> tuple[int, int]:
        """Shape the image must have for every tile to be a full `tile` x `tile` view."""
        return max(self.height, self.tile), max(self.width, self.tile)

    def cut(self, image: np.ndarray, index: int) -> np.ndarray:
        """A view (no copy) of one tile of an image already padded to `padded_shape`."""
        t = self.tiles[index]
        return image[t.y:t.y + self.tile, t.x:t.x + self.tile]

    def blend(self, merged: np.ndarray, index: int, output: np.ndarray) -> None:
        """Add one tile's output (tile x tile) into `merged` (height x width), weighted."""
        t = self.tiles[index]
        h, w = min(self.tile, self.height), min(self.tile, self.width)
        region = merged[t.y:t.y + h, t.x:t.x + w]
        out = output[:h, :w]
        if t.uniform:
            region += out
        else:
            region += out * t.weight_y[:, None] * t.weight_x[None, :]

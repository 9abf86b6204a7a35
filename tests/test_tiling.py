"""Tiling and blending: the seed's exact geometry, partition of unity, seamless merging."""
import numpy as np
import pytest

from shared.pipeline import segment
from shared.tiling import TileGrid, tile_starts
from tests.conftest import textured


def test_seed_geometry_is_81_tiles_of_224():
    assert tile_starts(2016, 224, 0) == [224 * i for i in range(9)]
    grid = TileGrid(2016, 2016, 224, 0)
    assert len(grid) == 81
    assert all(t.uniform for t in grid.tiles)


@pytest.mark.parametrize("length,tile,overlap", [(2016, 512, 64), (1341, 512, 64), (1000, 256, 100), (300, 512, 64)])
def test_weights_are_a_partition_of_unity(length, tile, overlap):
    grid = TileGrid(length, length, tile, overlap, margin=16)
    total = np.zeros((length, length), np.float32)
    for i in range(len(grid)):
        grid.blend(total, i, np.ones((tile, tile), np.float32))
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    starts = tile_starts(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, length) == length
    assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_seed_geometry_merges_back_exactly(make_session):
    """Identity model (output = first channel): 81 tiles of 224 reassemble the image."""
    session = make_session("identity", batch=9, mode="square", working_size=2016, tile=224, overlap=0)
    image = textured(2016, 2016, seed=1)
    result = segment(image, session)
    assert result.tiles == 81
    np.testing.assert_array_equal(result.prob8, image[:, :, 0])


def test_tiled_blended_output_equals_whole_image_output(make_session):
    """A fully convolutional model: blended tiles match one whole-image pass, no seams."""
    image = textured(384, 384, seed=2)
    whole = segment(image, make_session("conv", batch=1, mode="native", tile=384, overlap=0)).prob8
    tiled = segment(image, make_session("conv", mode="native", tile=128, overlap=32, margin=8))
    assert tiled.tiles == 16
    inner = (slice(4, -4), slice(4, -4))     # the image border sees padding either way
    assert np.abs(tiled.prob8.astype(int) - whole.astype(int))[inner].max() <= 1
    # The test can fail: hard tiling without overlap leaves seams the blend removes.
    hard = segment(image, make_session("conv", mode="native", tile=128, overlap=0)).prob8
    assert np.abs(hard.astype(int) - whole.astype(int))[inner].max() > 10


def test_spot_across_a_tile_joint_is_one_spot(make_session):
    session = make_session("identity", mode="native", tile=128, overlap=32, margin=8, threshold=0.5)
    image = np.zeros((300, 300, 3), np.uint8)
    joint = TileGrid(300, 300, 128, 32).tiles[1].x          # x where the second tile starts
    image[140:160, joint - 10:joint + 30] = 255              # straddles the overlap zone
    result = segment(image, session)
    assert len(result.spots) == 1
    assert result.spots[0]["area"] == 20 * 40
    assert result.spots[0]["bbox"] == [joint - 10, 140, 40, 20]


def test_image_smaller_than_a_tile_is_padded_and_cropped(make_session):
    session = make_session("identity", mode="native", tile=128, overlap=32)
    image = textured(50, 90, seed=3)
    result = segment(image, session)
    assert result.prob8.shape == (50, 90)
    np.testing.assert_array_equal(result.prob8, image[:, :, 0])

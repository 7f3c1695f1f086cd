"""Tiled maps: the seam blend against its per-row formula, and the tile grid."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit_models_autoencoder.tiling import blend_horizontal, blend_vertical, tile_plan, tiled_map


def _blend_rows_one_by_one(a: torch.Tensor, b: torch.Tensor, extent: int) -> torch.Tensor:
    b = b.clone()
    extent = min(a.shape[2], b.shape[2], extent)
    for y in range(extent):
        b[:, :, y] = a[:, :, y - extent] * (1 - y / extent) + b[:, :, y] * (y / extent)
    return b


@settings(max_examples=20, deadline=None)
@given(rows_a=st.integers(1, 6), rows_b=st.integers(1, 6), extent=st.integers(0, 7))
def test_vertical_blend_is_the_row_by_row_cross_fade(rows_a, rows_b, extent):
    gen = torch.Generator().manual_seed(rows_a * 100 + rows_b * 10 + extent)
    a, b = torch.randn(1, 2, rows_a, 3, generator=gen), torch.randn(1, 2, rows_b, 3, generator=gen)
    expected = _blend_rows_one_by_one(a, b, extent)
    got = blend_vertical(a, b, extent)
    assert got is b and torch.equal(got, expected)


def test_horizontal_blend_is_the_vertical_one_transposed():
    a, b = torch.randn(2, 1, 3, 5), torch.randn(2, 1, 3, 4)
    expected = blend_vertical(a.transpose(2, 3), b.transpose(2, 3).clone(), 3).transpose(2, 3)
    assert torch.equal(blend_horizontal(a, b, 3), expected)


def test_identity_map_on_a_grid_gives_back_the_input():
    x = torch.randn(1, 2, 20, 14)
    assert torch.equal(tiled_map(x, lambda t: t.clone(), tile_in=8, tile_out=8, overlap_factor=0.25), x)


def test_plan_and_refusals():
    assert tile_plan(512, 64, 0.25) == (384, 16, 48)
    with pytest.raises(ValueError, match="tile_sample_min_size"):
        tile_plan(1, 1, 0.25)
    with pytest.raises(ValueError, match="tile_overlap_factor"):
        tile_plan(8, 8, 1.0)

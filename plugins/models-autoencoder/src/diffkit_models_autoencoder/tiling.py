"""Tiled encoding and decoding: run a map on overlapping tiles and blend the seams linearly.

The input is cut into square tiles of ``tile_in`` pixels every ``tile_in * (1 - overlap)``
pixels; each output tile (``tile_out`` pixels when full) is blended with its already
blended upper and left neighbours over ``tile_out * overlap`` rows/columns, then cropped to
``tile_out - blend`` so the crops fit together. The order (blend top, then left, each tile
seeing its neighbours' blended values) is that of diffusers, so the numbers match.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _ramp(extent: int, like: torch.Tensor) -> torch.Tensor:
    """Blend weights ``y / extent`` for ``y = 0 .. extent - 1``, rounded as a Python scalar would be."""
    compute = torch.float32 if like.dtype in _LOW_PRECISION else like.dtype
    return (torch.arange(extent, dtype=torch.float64) / extent).to(device=like.device, dtype=compute)


def _blend(previous: torch.Tensor, current: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Overwrite the first ``extent`` slices of ``current`` along ``dim`` with a linear cross-fade
    from the last ``extent`` slices of ``previous``; returns ``current``."""
    extent = min(previous.shape[dim], current.shape[dim], extent)
    if extent <= 0:
        return current
    shape = [1] * current.ndim
    shape[dim] = extent
    weight = _ramp(extent, current).view(shape)
    head = current.narrow(dim, 0, extent)
    tail = previous.narrow(dim, previous.shape[dim] - extent, extent)
    # b[y] = a[-extent + y] * (1 - y / extent) + b[y] * (y / extent)
    head.copy_((tail * (1 - weight)).to(current.dtype) + (head * weight).to(current.dtype))
    return current


def blend_vertical(above: torch.Tensor, below: torch.Tensor, extent: int) -> torch.Tensor:
    """Cross-fade the top ``extent`` rows of ``below`` from the bottom rows of ``above`` (in place)."""
    return _blend(above, below, extent, dim=2)


def blend_horizontal(left: torch.Tensor, right: torch.Tensor, extent: int) -> torch.Tensor:
    """Cross-fade the left ``extent`` columns of ``right`` from the right columns of ``left`` (in place)."""
    return _blend(left, right, extent, dim=3)


def tile_plan(tile_in: int, tile_out: int, overlap_factor: float) -> tuple[int, int, int]:
    """``(stride, blend, keep)``: input stride between tiles, blended and kept output extents.

    Raises ``ValueError`` naming the tile settings when they leave no stride or nothing to keep.
    """
    stride = int(tile_in * (1 - overlap_factor))
    blend = int(tile_out * overlap_factor)
    keep = tile_out - blend
    if stride <= 0 or keep <= 0:
        raise ValueError(
            f"tiles of {tile_in} input and {tile_out} output pixels with tile_overlap_factor={overlap_factor} "
            "leave no stride between tiles or nothing to keep of each; use larger tile sizes "
            "(tile_sample_min_size, tile_latent_min_size) or a tile_overlap_factor in [0, 1)"
        )
    return stride, blend, keep


def tiled_map(
    x: torch.Tensor,
    fn: Callable[[torch.Tensor], torch.Tensor],
    *,
    tile_in: int,
    tile_out: int,
    overlap_factor: float,
) -> torch.Tensor:
    """Apply ``fn`` to overlapping ``tile_in``-pixel tiles of ``x`` and stitch the blended outputs."""
    stride, blend, keep = tile_plan(tile_in, tile_out, overlap_factor)
    height, width = x.shape[2], x.shape[3]
    rows = [
        [fn(x[:, :, i : i + tile_in, j : j + tile_in]) for j in range(0, width, stride)]
        for i in range(0, height, stride)
    ]
    stitched_rows = []
    for i, row in enumerate(rows):
        pieces = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = blend_vertical(rows[i - 1][j], tile, blend)
            if j > 0:
                tile = blend_horizontal(row[j - 1], tile, blend)
            pieces.append(tile[:, :, :keep, :keep])
        stitched_rows.append(torch.cat(pieces, dim=3))
    return torch.cat(stitched_rows, dim=2)

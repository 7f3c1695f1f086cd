"""Checks for NaN and Inf: in loaded weights (one reduction per tensor) and in generated images.

A checkpoint whose weights hold NaN or Inf loads without error and then produces NaN images;
these checks say so where it happens. ``DIFFKIT_CHECK_WEIGHTS=0`` skips the weight check.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch

from ._env import env_flag

logger = logging.getLogger("diffkit.finite")

CHECK_WEIGHTS_ENV = "DIFFKIT_CHECK_WEIGHTS"


def _sum_is_finite(tensor: torch.Tensor) -> torch.Tensor:
    # NaN/Inf in any element makes the sum non-finite; in the tensor's own dtype this is ~10x faster
    # than a float64 sum (a finite tensor whose sum overflows is settled by `_all_finite`)
    return torch.isfinite(tensor.sum())


def _all_finite(tensor: torch.Tensor) -> bool:
    return bool(torch.isfinite(tensor).all())


def non_finite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating tensors holding NaN or Inf, in the order given; one reduction each."""
    checked = [(n, t) for n, t in named if t.is_floating_point() and t.numel() and t.device.type != "meta"]
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, tensor) in enumerate(checked):
        by_device.setdefault(tensor.device, []).append(i)
    suspects: list[int] = []
    for indices in by_device.values():  # one synchronisation per device
        flags = torch.stack([_sum_is_finite(checked[i][1]) for i in indices]).cpu().tolist()
        suspects += [i for i, ok in zip(indices, flags, strict=True) if not ok]
    return [checked[i][0] for i in sorted(suspects) if not _all_finite(checked[i][1])]


def check_weights(model: torch.nn.Module, what: str) -> list[str]:
    """Warn when ``model``'s weights hold NaN or Inf, naming ``what`` and the first such tensor."""
    if not env_flag(CHECK_WEIGHTS_ENV, default=True):
        return []
    named = [*model.named_parameters(), *model.named_buffers()]
    bad = non_finite_tensors(named)
    if bad:
        logger.warning(
            "%s: %d of %d weight tensors hold non-finite values (NaN or Inf), the first is %r; what it computes "
            "will be NaN. Is the checkpoint damaged, or was it overflowed by a cast to float16? "
            "(%s=0 skips this check)", what, len(bad), len(named), bad[0], CHECK_WEIGHTS_ENV,
        )
    return bad


def check_images(images: torch.Tensor, what: str = "images") -> bool:
    """Warn once when ``images`` hold NaN or Inf; returns whether they are all finite."""
    if not images.is_floating_point() or not images.numel() or bool(_sum_is_finite(images)) or _all_finite(images):
        return True
    logger.warning(
        "the %s of this call hold non-finite values (NaN or Inf), shown as black pixels: the weights hold NaN/Inf "
        "or float16 overflowed (try torch_dtype=torch.float32)", what,
    )
    return False

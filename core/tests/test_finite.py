"""The NaN/Inf checks: a fast sum first, the exact element test only where the sum is not finite."""

from __future__ import annotations

import torch

from diffkit.finite import check_images, non_finite_tensors


def test_finite_tensor_whose_sum_overflows_is_not_flagged() -> None:
    big = torch.full((8,), 60000.0, dtype=torch.float16)  # finite, but its float16 sum is inf
    assert not torch.isfinite(big.sum())
    assert non_finite_tensors([("big", big)]) == []
    assert check_images(big)


def test_nan_and_inf_are_named_in_order() -> None:
    tensors = [
        ("ok", torch.ones(3)),
        ("inf", torch.tensor([1.0, float("inf")])),
        ("ints", torch.arange(3)),
        ("nan", torch.tensor([float("nan")], dtype=torch.bfloat16)),
    ]
    assert non_finite_tensors(tensors) == ["inf", "nan"]
    assert not check_images(torch.tensor([0.5, float("nan")]))

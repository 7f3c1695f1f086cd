"""One tolerance rule for comparing a diffkit tensor with diffusers' (imported by parity tests).

Bit-exactness holds only where the very same operations run in the same order on the same dtype;
a table that diffkit computes its own way (float64 ``exp``/``log``/``linspace`` chains, a
reordered product) may differ in the last bit from one CPU's vector unit to another's. So:

- integer and bool tensors must be equal;
- float64: relative 1e-12 (and 1e-12 absolute near zero), far below anything a sampler notices;
- float32: the project's 1e-5 absolute, plus 2e-6 relative for tables whose entries run into the
  hundreds (a timestep of 999 has an ulp of 6e-5);
- half precision: torch's own defaults.

The dtype and the shape must always match.
"""

from __future__ import annotations

import torch

#: (rtol, atol) per floating dtype
TOLERANCES: dict[torch.dtype, tuple[float, float]] = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


def assert_matches(ours: torch.Tensor, ref: torch.Tensor, what: str = "") -> None:
    """Assert ``ours`` equals diffusers' ``ref`` within the tolerance of their shared dtype."""
    ours, ref = torch.as_tensor(ours), torch.as_tensor(ref)
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != diffusers' {ref.dtype}"
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != diffusers' {tuple(ref.shape)}"
    if not ours.is_floating_point():
        assert torch.equal(ours, ref), f"{what}: {ours} != diffusers' {ref}"
        return
    rtol, atol = TOLERANCES[ours.dtype]
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}")

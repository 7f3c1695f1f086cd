"""``randn_tensor``: Gaussian noise drawn exactly as diffusers draws it, so seeds match.

A list of generators draws each batch item separately as a ``(1, ...)`` tensor; a CPU
generator with another target device samples on the CPU and moves the result.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def randn_tensor(
    shape: Sequence[int],
    generator: torch.Generator | list[torch.Generator] | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    layout: torch.layout | None = None,
) -> torch.Tensor:
    check_generator(generator)
    device = torch.device(device) if device is not None else torch.device("cpu")
    layout = layout or torch.strided
    if isinstance(generator, (list, tuple)) and len(generator) == 1:
        generator = generator[0]
    sample_device = device
    if generator is not None:
        gen_device = (generator[0] if isinstance(generator, (list, tuple)) else generator).device
        if gen_device.type != device.type:
            if gen_device.type == "cpu":
                sample_device = torch.device("cpu")
            else:
                raise ValueError(
                    f"generator is on {gen_device} but the tensor is wanted on {device}; use a CPU generator "
                    "or one on the target device"
                )
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(
                f"got a list of {len(generator)} generators for a batch of {shape[0]}; pass one per image"
            )
        one = (1, *shape[1:])
        parts = [torch.randn(one, generator=g, device=sample_device, dtype=dtype, layout=layout) for g in generator]
        noise = torch.cat(parts, dim=0)
    else:
        noise = torch.randn(tuple(shape), generator=generator, device=sample_device, dtype=dtype, layout=layout)
    return noise.to(device)


def check_generator(generator: Any) -> None:
    """Refuse a ``generator`` argument that is not ``None``, a ``torch.Generator`` or a list of them."""
    items = generator if isinstance(generator, (list, tuple)) else [generator]
    if generator is None or all(isinstance(g, torch.Generator) for g in items) and items:
        return
    wrong = next((g for g in items if not isinstance(g, torch.Generator)), generator)
    hint = ""
    if isinstance(wrong, int) and not isinstance(wrong, bool):
        hint = f"; for a seed pass generator=torch.Generator().manual_seed({wrong})"
    raise TypeError(
        f"generator must be a torch.Generator or a list of them (one per image), got {type(wrong).__name__} "
        f"{wrong!r}{hint}"
    )


def is_generator_list(generator: Any) -> bool:
    return isinstance(generator, (list, tuple))

"""Activation functions by the names diffusers configs use (``act_fn``)."""

from __future__ import annotations

from typing import Literal

from torch import nn

ActivationName = Literal["silu", "swish", "mish", "gelu", "relu"]

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "mish": nn.Mish,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
}


def activation(name: str) -> nn.Module:
    """A fresh activation module for ``name`` (case-insensitive)."""
    try:
        return _ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; allowed: {', '.join(_ACTIVATIONS)}") from None

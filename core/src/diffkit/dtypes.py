"""``torch_dtype`` arguments: a dtype, a name, ``"auto"``, or a dict by component name.

diffusers 0.42 also takes the same value as ``dtype``; :func:`one_dtype` merges the two names.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

_NAMES = ("float32", "float16", "bfloat16", "float64", "fp32", "fp16", "bf16", "half", "float", "double")
_ALIASES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32",
            "double": "float64"}


def parse_dtype(value: Any, argument: str = "torch_dtype") -> torch.dtype | str | None:
    """Normalise one dtype argument; returns a ``torch.dtype``, ``"auto"`` or ``None``."""
    import torch

    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str):
        name = value.removeprefix("torch.")
        if name == "auto":
            return "auto"
        name = _ALIASES.get(name, name)
        if name in _NAMES:
            return getattr(torch, name)
        raise ValueError(
            f"{argument}={value!r} is not a dtype; use a torch.dtype, 'auto' or one of: {', '.join(_NAMES)}"
        )
    raise TypeError(f"{argument} must be a torch.dtype, a dtype name or 'auto', got {type(value).__name__}")


def dtype_for(torch_dtype: Any, component: str) -> torch.dtype | str | None:
    """Pick the dtype of ``component`` from a per-component dict (``"default"`` as fallback)."""
    if isinstance(torch_dtype, dict):
        value = torch_dtype.get(component, torch_dtype.get("default"))
        return parse_dtype(value, f"torch_dtype[{component!r}]")
    return parse_dtype(torch_dtype)


def one_dtype(torch_dtype: Any, dtype: Any) -> Any:
    """The value of ``torch_dtype`` or of its newer name ``dtype``; both given and different is an error."""
    if dtype is None:
        return torch_dtype
    if torch_dtype is None:
        return dtype
    if _normalised(torch_dtype, "torch_dtype") != _normalised(dtype, "dtype"):
        raise ValueError(
            f"torch_dtype={torch_dtype!r} and dtype={dtype!r} disagree: they are two names of one option, pass one"
        )
    return torch_dtype


def _normalised(value: Any, argument: str) -> Any:
    if isinstance(value, dict):
        return {key: parse_dtype(item, f"{argument}[{key!r}]") for key, item in value.items()}
    return parse_dtype(value, argument)

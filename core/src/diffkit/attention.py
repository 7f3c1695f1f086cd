"""``AttentionBackend``: the protocol every attention layer calls for its core product.

A model's attention layer projects queries, keys and values and calls the backend object it
holds: ``backend(q, k, v, attn_mask=None, scale=None)`` with tensors shaped
``(batch, heads, tokens, head_dim)``; the backend returns the same shape. Backends are
registered by name (``sdpa``, ``sliced``, ``xformers``) and one instance is shared by every
layer of a pipeline, so ``torch.compile`` guards see one object type.

Backends hold no per-call state (only the options they were built with), so one instance
serves concurrent calls from many threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

DEFAULT_BACKEND = "sdpa"


class AttentionBackend:
    """Base class of attention backends."""

    name: ClassVar[str] = ""

    def is_available(self, device: Any = None) -> tuple[bool, str]:
        """``(True, "")`` or ``(False, why)`` for the given device (``None``: anywhere)."""
        return True, ""

    def options(self) -> dict[str, Any]:
        """The options this instance was built with (for ``repr`` and saving)."""
        return {}

    def check_layer(self, layer: Any, where: str) -> None:
        """Raise ``ValueError`` if this backend cannot serve ``layer`` (named ``where`` in errors).

        Called for every layer before a pipeline switches backend, so that a bad option fails
        at selection and leaves the previous backend in place. The default accepts every layer.
        """

    def __call__(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        scale: float | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


_default: dict[str, AttentionBackend] = {}
_default_lock = threading.Lock()


def resolve_backend(backend: str | AttentionBackend = DEFAULT_BACKEND, **options: Any) -> AttentionBackend:
    """An instance for a registered name (built with ``options``) or the instance given."""
    if isinstance(backend, AttentionBackend):
        if options:
            raise TypeError("options are only accepted with a backend name, not with a backend instance")
        return backend
    from ._registry import registry

    cls = registry.get("attention_backend", backend)
    instance = cls(**options)
    ok, why = instance.is_available()
    if not ok:
        raise RuntimeError(f"attention backend {backend!r} is not available: {why}")
    return instance


def attention_layers(module: Any) -> list[tuple[str, Any]]:
    """``(dotted path, layer)`` of every sub-module of ``module`` that holds an ``attention_backend``."""
    return [
        (name, layer)
        for name, layer in module.named_modules()
        if layer is not module and hasattr(layer, "attention_backend")
    ]


def default_backend() -> AttentionBackend:
    """The process-wide default instance (SDPA), built once; models start with it."""
    with _default_lock:
        if DEFAULT_BACKEND not in _default:
            _default[DEFAULT_BACKEND] = resolve_backend(DEFAULT_BACKEND)
        return _default[DEFAULT_BACKEND]

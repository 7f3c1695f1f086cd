"""diffkit plugin: loads and saves ``model_index.json`` components of library ``transformers``.

Public names are imported lazily, so importing this package (which the registry does through
``hooks``) never imports torch or transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "TransformersLoader": "diffkit_loader_transformers.loader",
    "weight_files_needed": "diffkit_loader_transformers.files",
    "final_layer_norm": "diffkit_loader_transformers.clip",
    "clip_text_hidden_states": "diffkit_loader_transformers.clip",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

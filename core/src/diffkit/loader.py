"""``ComponentLoader``: loads components whose ``model_index.json`` library is not diffkit's.

A loader is registered under a library name (``transformers``, ...). The core calls
``load(class_name, folder, **options)`` and ``save(component, folder, **options)``; it never
imports a module just because a JSON file names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class ComponentLoader:
    """Base class of component loaders for third-party libraries."""

    library: str = ""

    def can_load(self, class_name: str) -> bool:
        """Whether this loader knows ``class_name``; unknown names are refused, never imported."""
        raise NotImplementedError

    # Optional: ``files_needed(class_name, names, *, variant, use_safetensors, allow_pickle)``
    # returns the file names of a component folder (from a Hub listing) that ``load`` reads;
    # without it, the core fetches every file of the folder but other formats' weights.

    def load(self, class_name: str, folder: Path, **options: Any) -> Any:
        raise NotImplementedError

    def owns(self, component: Any) -> bool:
        """Whether ``component`` is an object this loader can save (for ``save_pretrained``)."""
        raise NotImplementedError

    def save(self, component: Any, folder: Path, **options: Any) -> None:
        raise NotImplementedError

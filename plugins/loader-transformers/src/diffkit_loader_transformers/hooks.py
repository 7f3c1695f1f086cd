"""Hook module: registers the ``transformers`` component loader by string (imports no transformers)."""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_component_loaders(register: Register) -> None:
    register("transformers", "diffkit_loader_transformers.loader:TransformersLoader")

"""The hooks a diffkit plugin can implement.

A plugin distribution declares one entry point in the group ``diffkit`` that points at a
light hook module. Each ``register_*`` hook receives a ``register(name, target, **meta)``
callback; ``target`` is a ``"module:Attr"`` string, so that nothing heavy is imported
until a name is actually resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("diffkit")
hookimpl = pluggy.HookimplMarker("diffkit")

#: ``register(name, "module:Attr", **meta)``
Register = Callable[..., None]


@hookspec
def register_pipelines(register: Register) -> None:
    """Register pipeline classes by their ``model_index.json`` ``_class_name``."""


@hookspec
def register_models(register: Register) -> None:
    """Register model classes (denoisers, autoencoders, encoders) by class name."""


@hookspec
def register_schedulers(register: Register) -> None:
    """Register scheduler classes by class name."""


@hookspec
def register_processors(register: Register) -> None:
    """Register pre/post-processor classes by class name."""


@hookspec
def register_attention_backends(register: Register) -> None:
    """Register attention backends by short name (``sdpa``, ``sliced``, ...)."""


@hookspec
def register_offload_strategies(register: Register) -> None:
    """Register offload strategies by short name (``model``, ``sequential``, ...)."""


@hookspec
def register_component_loaders(register: Register) -> None:
    """Register loaders for a ``model_index.json`` library name (e.g. ``transformers``)."""


@hookspec
def register_pretrained(register: Register) -> None:
    """Register checkpoints shipped inside a package: ``register(name, "module:path_attr")``.

    The target resolves to a ``str`` or ``os.PathLike`` pointing at a checkpoint folder.
    """


@hookspec
def pipeline_loaded(pipeline: Any, source: str) -> None:
    """Notification: ``from_pretrained`` built ``pipeline`` from ``source``."""

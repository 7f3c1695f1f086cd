"""The hooks a diffkit plugin can implement.

A plugin distribution declares one entry point in the group ``diffkit`` that points at a
light hook module. Each ``register_*`` hook receives a ``register(name, target, **meta)``
callback; ``target`` is a ``"module:Attr"`` string, so that nothing heavy is imported
until a name is actually resolved.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pluggy

from .errors import PluginError

hookspec = pluggy.HookspecMarker("diffkit")
hookimpl = pluggy.HookimplMarker("diffkit")

#: ``register(name, "module:Attr", **meta)``
Register = Callable[..., None]


@hookspec
def register_pipelines(register: Register) -> None:
    """Register pipeline classes by their ``model_index.json`` ``_class_name``.

    ``register(name, target, task="image-to-image", family="stable-diffusion")``: the optional
    ``task`` and ``family`` (see :class:`PipelineRole`) let ``AutoPipelineFor*`` pick, for a
    checkpoint or a loaded pipeline, the pipeline of the same family that does another task.
    """


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
def register_step_caches(register: Register) -> None:
    """Register step caches (work reused between denoising steps, e.g. ``deepcache``) by short name."""


@hookspec
def register_component_loaders(register: Register) -> None:
    """Register loaders for a ``model_index.json`` library name (e.g. ``transformers``)."""


@hookspec
def register_pretrained(register: Register) -> None:
    """Register checkpoints shipped inside a package: ``register(name, "module:path_attr", **recommended)``.

    The target resolves to a ``str`` or ``os.PathLike`` pointing at a checkpoint folder. The
    optional keywords say how the checkpoint is best run (see :class:`PretrainedDefaults`):
    ``scheduler="DDIMScheduler"`` and ``call_defaults={"num_inference_steps": 50}``. ``diffkit
    generate NAME`` uses them where its options say nothing; ``from_pretrained`` loads the
    checkpoint as saved.
    """


@dataclass(frozen=True)
class PretrainedDefaults:
    """What a ``register_pretrained`` registration recommends: a scheduler and ``__call__`` keyword defaults.

    The call defaults belong with the scheduler: a run that picks another scheduler uses the
    pipeline's own defaults instead.
    """

    scheduler: str | None = None
    call_defaults: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_meta(cls, name: str, dist: str, meta: Mapping[str, Any]) -> PretrainedDefaults:
        """Read and check the keywords of ``register(name, target, **meta)``; a bad one names the plugin."""
        unknown = sorted(set(meta) - {"scheduler", "call_defaults"})
        where = f"plugin {dist!r} registers pretrained {name!r} with"
        if unknown:
            raise PluginError(f"{where} unknown keywords {unknown}; the known ones are 'scheduler', 'call_defaults'")
        scheduler = meta.get("scheduler")
        if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.isidentifier()):
            raise PluginError(f"{where} scheduler={scheduler!r}; it must be a scheduler class name")
        defaults = meta.get("call_defaults", {})
        if not isinstance(defaults, Mapping) or not all(isinstance(k, str) and k.isidentifier() for k in defaults):
            raise PluginError(f"{where} call_defaults={defaults!r}; it must map __call__ parameter names to values")
        return cls(scheduler, dict(defaults))


#: the tasks that ``AutoPipelineForText2Image``, ``...Image2Image`` and ``...Inpainting`` map to
TEXT_TO_IMAGE, IMAGE_TO_IMAGE, INPAINTING = "text-to-image", "image-to-image", "inpainting"

_ROLE_WORD = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


@dataclass(frozen=True)
class PipelineRole:
    """What a ``register_pipelines`` registration declares: the ``task`` it does and the model ``family``.

    Both are lowercase hyphenated words (``"inpainting"``, ``"stable-diffusion-xl"``). Pipelines
    of one family load the same checkpoints and share their components, so ``from_pipe`` can turn
    one into another; the task tells the ``AutoPipelineFor*`` classes which one to build
    (:data:`TEXT_TO_IMAGE`, :data:`IMAGE_TO_IMAGE`, :data:`INPAINTING`, or a task of the family's own).
    """

    task: str | None = None
    family: str | None = None

    @classmethod
    def from_meta(cls, name: str, dist: str, meta: Mapping[str, Any]) -> PipelineRole:
        """Read and check the keywords of ``register(name, target, **meta)``; a bad one names the plugin."""
        where = f"plugin {dist!r} registers pipeline {name!r} with"
        unknown = sorted(set(meta) - {"task", "family"})
        if unknown:
            raise PluginError(f"{where} unknown keywords {unknown}; the known ones are 'task', 'family'")
        for key in ("task", "family"):
            value = meta.get(key)
            if value is not None and (not isinstance(value, str) or not _ROLE_WORD.match(value)):
                raise PluginError(f"{where} {key}={value!r}; it must be lowercase words joined by '-'")
        return cls(meta.get("task"), meta.get("family"))


@hookspec
def pipeline_loaded(pipeline: Any, source: str) -> None:
    """Notification: ``from_pretrained`` built ``pipeline`` from ``source``."""

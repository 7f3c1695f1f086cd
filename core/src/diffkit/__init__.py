"""diffkit: diffusion-model inference with a plugin architecture.

``import diffkit`` is cheap: it imports neither torch nor any plugin. The public names below
are loaded on first access (PEP 562), and so is any pipeline, model or scheduler class an
installed plugin registers: ``from diffkit import DDIMScheduler`` works as in diffusers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "Pipeline": ("diffkit.pipeline", "Pipeline"),
    "DiffusionPipeline": ("diffkit.pipeline", "Pipeline"),
    "AutoPipelineForText2Image": ("diffkit.auto_pipeline", "AutoPipelineForText2Image"),
    "AutoPipelineForImage2Image": ("diffkit.auto_pipeline", "AutoPipelineForImage2Image"),
    "AutoPipelineForInpainting": ("diffkit.auto_pipeline", "AutoPipelineForInpainting"),
    "Model": ("diffkit.model", "Model"),
    "Scheduler": ("diffkit.scheduler", "Scheduler"),
    "SchedulerState": ("diffkit.scheduler", "SchedulerState"),
    "Processor": ("diffkit.processor", "Processor"),
    "AttentionBackend": ("diffkit.attention", "AttentionBackend"),
    "OffloadStrategy": ("diffkit.offload", "OffloadStrategy"),
    "StepCache": ("diffkit.step_cache", "StepCache"),
    "ComponentLoader": ("diffkit.loader", "ComponentLoader"),
    "Config": ("diffkit.config", "Config"),
    "ImagePipelineOutput": ("diffkit.outputs", "ImagePipelineOutput"),
    "AudioPipelineOutput": ("diffkit.outputs", "AudioPipelineOutput"),
    "SchedulerOutput": ("diffkit.outputs", "SchedulerOutput"),
    "BaseOutput": ("diffkit.outputs", "BaseOutput"),
    "numpy_to_pil": ("diffkit.outputs", "numpy_to_pil"),
    "randn_tensor": ("diffkit.randomness", "randn_tensor"),
    "registry": ("diffkit._registry", "registry"),
    "Registry": ("diffkit._registry", "Registry"),
    "hookimpl": ("diffkit.hookspecs", "hookimpl"),
    "ComponentNotFoundError": ("diffkit.errors", "ComponentNotFoundError"),
    "CheckpointError": ("diffkit.errors", "CheckpointError"),
    "MissingFileError": ("diffkit.errors", "MissingFileError"),
    "ConfigError": ("diffkit.errors", "ConfigError"),
    "PluginError": ("diffkit.errors", "PluginError"),
    "DuplicateNameError": ("diffkit.errors", "DuplicateNameError"),
    "RemoteCodeError": ("diffkit.errors", "RemoteCodeError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


#: registry kinds that ``from diffkit import Name`` looks in, in this order
_REGISTERED_KINDS = ("pipeline", "model", "scheduler")


def __getattr__(name: str) -> Any:
    entry = _LAZY.get(name)
    if entry is not None:
        import importlib

        value = getattr(importlib.import_module(entry[0]), entry[1])
    elif name[:1].isupper() and name.isidentifier():
        value = _registered(name)
    else:
        raise AttributeError(f"module 'diffkit' has no attribute {name!r}")
    globals()[name] = value
    return value


def _registered(name: str) -> Any:
    """A pipeline, model or scheduler class by name, as diffusers exports them (``from diffkit import DDIMScheduler``).

    A name no installed plugin provides raises the registry's :class:`ComponentNotFoundError`
    (a ``LookupError``, so ``from diffkit import X`` shows its install hint rather than a bare
    ``ImportError``).
    """
    from ._registry import registry

    for kind in _REGISTERED_KINDS:
        if registry.has(kind, name):
            return registry.get(kind, name)
    from .errors import ComponentNotFoundError

    misses: list[ComponentNotFoundError] = []
    for kind in _REGISTERED_KINDS:
        try:
            registry.entry(kind, name, context="from diffkit import")
        except ComponentNotFoundError as exc:
            misses.append(exc)
    for miss in misses:  # a kind where registry.toml names a package to install, else a close name
        if miss.suggested_packages:
            raise miss
    for miss in misses:
        if miss.candidates:
            raise miss
    guess = "pipeline" if name.endswith("Pipeline") else "scheduler" if name.endswith("Scheduler") else "model"
    raise next((m for m in misses if m.kind == guess), misses[0])


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from ._registry import Registry, registry
    from .auto_pipeline import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image
    from .attention import AttentionBackend
    from .config import Config
    from .errors import (
        CheckpointError,
        ComponentNotFoundError,
        ConfigError,
        DuplicateNameError,
        MissingFileError,
        PluginError,
        RemoteCodeError,
    )
    from .hookspecs import hookimpl
    from .loader import ComponentLoader
    from .model import Model
    from .offload import OffloadStrategy
    from .outputs import AudioPipelineOutput, BaseOutput, ImagePipelineOutput, SchedulerOutput, numpy_to_pil
    from .pipeline import Pipeline
    from .pipeline import Pipeline as DiffusionPipeline
    from .processor import Processor
    from .randomness import randn_tensor
    from .scheduler import Scheduler, SchedulerState
    from .step_cache import StepCache

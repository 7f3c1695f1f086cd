"""diffkit: diffusion-model inference with a plugin architecture.

``import diffkit`` is cheap: it imports neither torch nor any plugin. The public names below
are loaded on first access (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, tuple[str, str]] = {
    "Pipeline": ("diffkit.pipeline", "Pipeline"),
    "DiffusionPipeline": ("diffkit.pipeline", "Pipeline"),
    "Model": ("diffkit.model", "Model"),
    "Scheduler": ("diffkit.scheduler", "Scheduler"),
    "SchedulerState": ("diffkit.scheduler", "SchedulerState"),
    "Processor": ("diffkit.processor", "Processor"),
    "AttentionBackend": ("diffkit.attention", "AttentionBackend"),
    "OffloadStrategy": ("diffkit.offload", "OffloadStrategy"),
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
    "ConfigError": ("diffkit.errors", "ConfigError"),
    "PluginError": ("diffkit.errors", "PluginError"),
    "DuplicateNameError": ("diffkit.errors", "DuplicateNameError"),
    "RemoteCodeError": ("diffkit.errors", "RemoteCodeError"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'diffkit' has no attribute {name!r}") from None
    import importlib

    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:
    from ._registry import Registry, registry
    from .attention import AttentionBackend
    from .config import Config
    from .errors import (
        CheckpointError,
        ComponentNotFoundError,
        ConfigError,
        DuplicateNameError,
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

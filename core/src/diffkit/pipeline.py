"""``Pipeline`` (alias ``DiffusionPipeline``): components loaded together and run end to end.

A concrete pipeline declares its components as the ``__init__`` parameters without defaults
(plus ``optional_components``); parameters with defaults are pipeline settings stored in
``model_index.json``. Loading resolves every class by name through the plugin registry and
never imports a module because a JSON file names it. Pipelines keep no per-call state on
``self``: one object serves concurrent calls.
"""

from __future__ import annotations

import functools
import inspect
import logging
import numbers
import os
import shutil
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from ._fs import atomic_save
from ._registry import registry
from .checkpoint import MODEL_INDEX, write_json
from .config import DIFFUSERS_FORMAT_VERSION
from .model import Model
from .offload import OffloadStrategy
from .outputs import numpy_to_pil
from .processor import Processor
from .randomness import check_generator
from .remote_code import code_file_of
from .scheduler import Scheduler
from .step_cache import StepCache, call_scope

logger = logging.getLogger("diffkit.pipeline")

#: loading options that are not components or pipeline settings
LOAD_OPTIONS = (
    "torch_dtype", "variant", "use_safetensors", "allow_pickle", "revision", "cache_dir", "force_download",
    "local_files_only", "token", "proxies", "low_cpu_mem_usage", "device_map", "custom_pipeline",
    "custom_revision", "trust_remote_code", "output_loading_info", "allow_external_symlinks",
)


def _component_kind(class_name: str) -> str | None:
    for kind in ("model", "scheduler", "processor"):
        if registry.has(kind, class_name):
            return kind
    return None


def resolve_component_class(class_name: str, context: str) -> type:
    """The class registered for a ``["diffusers", class_name]`` entry (model, scheduler or processor)."""
    kind = _component_kind(class_name)
    if kind is None:
        guess = "scheduler" if class_name.endswith("Scheduler") else (
            "processor" if class_name.endswith("Processor") else "model")
        kind = guess
    return registry.get(kind, class_name, context=context)


class Pipeline:
    """Base class of every pipeline; ``DiffusionPipeline`` is the same class.

    Call :meth:`from_pretrained` on ``Pipeline`` to build whatever ``model_index.json`` names,
    or on a concrete subclass to load a compatible checkpoint into that class.
    """

    config_name: ClassVar[str] = MODEL_INDEX
    #: components that may be ``None`` even though ``__init__`` has no default for them
    optional_components: ClassVar[tuple[str, ...]] = ()
    #: the order in which model offloading moves components, e.g. ``"text_encoder->unet->vae"``
    model_cpu_offload_seq: ClassVar[str] = ""
    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = ("latents",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        call = cls.__dict__.get("__call__")
        if call is not None and not hasattr(call, "__diffkit_checked__"):
            cls.__call__ = _checked_call(call)

    def __init__(self, **kwargs: Any) -> None:
        names = set(self.component_names())
        params = self.parameter_names()
        object.__setattr__(self, "_settings", {})
        object.__setattr__(self, "_progress_bar_config", {})
        object.__setattr__(self, "_index_meta", {"_diffusers_version": DIFFUSERS_FORMAT_VERSION})
        object.__setattr__(self, "_attention_backend", None)
        object.__setattr__(self, "_step_cache", None)
        for key, value in kwargs.items():
            if key in names:
                self._check_component(key, value)
                object.__setattr__(self, key, value)
            elif key in params:
                self._settings[key] = value
            else:
                raise TypeError(f"{type(self).__name__} got an unexpected argument {key!r}")
        missing = names - set(kwargs)
        if missing:
            raise TypeError(f"{type(self).__name__} is missing component(s): {', '.join(sorted(missing))}")

    # -- declared structure -----------------------------------------------------------
    @classmethod
    def component_names(cls) -> list[str]:
        """Component names, sorted: ``__init__`` parameters without defaults plus optional components."""
        if cls.__init__ is Pipeline.__init__:
            return []
        names = []
        for param in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            if param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                continue
            if param.default is inspect.Parameter.empty or param.name in cls.optional_components:
                names.append(param.name)
        return sorted(names)

    @classmethod
    def parameter_names(cls) -> list[str]:
        """Pipeline settings: ``__init__`` parameters with defaults that are not components."""
        if cls.__init__ is Pipeline.__init__:
            return []
        return sorted(
            p.name
            for p in list(inspect.signature(cls.__init__).parameters.values())[1:]
            if p.default is not inspect.Parameter.empty
            and p.name not in cls.optional_components
            and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        )

    def _check_component(self, name: str, value: Any) -> None:
        if value is None:
            return
        current = self.__dict__.get(name)
        for base in (Scheduler, Model, Processor):
            if isinstance(current, base) and not isinstance(value, base):
                raise TypeError(
                    f"{type(self).__name__}.{name} must be a {base.__name__}, got {type(value).__name__}"
                )

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.component_names():
            self._check_component(name, value)
            if isinstance(value, Model) and self._attention_backend is not None:
                _give_backend([(name, value)], self._attention_backend)
            cache = self.step_cache
            if cache is not None and (
                isinstance(value, torch.nn.Module) or isinstance(self.__dict__.get(name), torch.nn.Module)
            ):
                # the old module is restored, the new one gets the cache's wrappers
                cache.remove(self)
                self._set_component(name, value)
                try:
                    cache.apply(self)
                except Exception:
                    object.__setattr__(self, "_step_cache", None)
                    raise
                return
            self._set_component(name, value)
            return
        object.__setattr__(self, name, value)

    def _set_component(self, name: str, value: Any) -> None:
        strategy = self.offload_strategy
        if strategy is not None and (
            isinstance(value, torch.nn.Module) or isinstance(self.__dict__.get(name), torch.nn.Module)
        ):
            # re-apply so that the new module is hooked and the old one is released
            device = strategy.execution_device
            strategy.remove(self)
            object.__setattr__(self, name, value)
            strategy.apply(self, device)
            return
        object.__setattr__(self, name, value)

    @property
    def components(self) -> dict[str, Any]:
        """The components by name: ``type(pipe)(**pipe.components)`` builds a sibling sharing weights."""
        return {name: getattr(self, name) for name in self.component_names()}

    @property
    def settings(self) -> dict[str, Any]:
        """Pipeline settings given at construction or read from ``model_index.json``."""
        return dict(self._settings)

    @property
    def name_or_path(self) -> str | None:
        return self._index_meta.get("_name_or_path")

    def _modules(self) -> list[tuple[str, torch.nn.Module]]:
        return [(n, c) for n, c in self.components.items() if isinstance(c, torch.nn.Module)]

    # -- device and dtype -------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The device of the first module (by component name) that is not on the CPU; else the CPU.

        While an offload strategy is active: its execution device.
        """
        strategy = self.offload_strategy
        if strategy is not None:
            return torch.device(strategy.execution_device)
        modules = self._modules()
        for _, module in modules:
            device = _module_device(module)
            if device.type not in ("cpu", "meta"):
                return device
        return _module_device(modules[0][1]) if modules else torch.device("cpu")

    @property
    def _execution_device(self) -> torch.device:
        """Where intermediate tensors are created (the offload strategy's device when one is active)."""
        strategy = getattr(self, "_offload_strategy", None)
        if strategy is not None:
            return torch.device(strategy.execution_device)
        return self.device

    @property
    def dtype(self) -> torch.dtype:
        modules = self._modules()
        for _, module in modules:
            for tensor in module.parameters():
                if tensor.is_floating_point():
                    return tensor.dtype
        return torch.float32

    def to(self, *args: Any, **kwargs: Any) -> Self:
        """Move every module component: ``to(device)``, ``to(dtype)``, ``to(device, dtype)``; returns ``self``.

        While offloading, a device turns offloading off (with a warning) and then moves every
        component there; a dtype alone casts the resting weights and keeps offloading.
        """
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("silence_dtype_warnings", None)
        if kwargs:
            raise TypeError(f"to() got unexpected arguments: {', '.join(kwargs)}")
        if len(args) > 2:
            raise ValueError("to() takes at most a device and a dtype")
        for arg in args:
            if isinstance(arg, torch.dtype):
                if dtype is not None:
                    raise ValueError("to(): the dtype was given twice")
                dtype = arg
            else:
                if device is not None:
                    raise ValueError("to(): the device was given twice")
                if len(args) == 2 and arg is args[1]:
                    raise ValueError("to(device, dtype): the device comes first")
                device = arg
        if device is not None:
            _check_device(device, f"{type(self).__name__}.to")
        strategy = self.offload_strategy
        if strategy is not None:
            if device is not None:
                warnings.warn(
                    f"{type(self).__name__}.to({str(device)!r}) while offload strategy {strategy.name!r} is active "
                    f"(execution device {strategy.execution_device}): offloading is turned off and every component "
                    "moves to that device; call enable_offload() (or enable_model_cpu_offload()) again to turn it on",
                    UserWarning,
                    stacklevel=2,
                )
                self.disable_offload()
            else:
                strategy.free(self)
        for _, module in self._modules():
            module.to(device=device, dtype=dtype)
        return self

    # -- attention --------------------------------------------------------------------
    def set_attention_backend(self, backend: Any = "sdpa", **options: Any) -> None:
        """Use one shared attention backend instance in every attention layer of every model.

        ``backend`` is a registered name (``"sdpa"``, ``"sliced"``, ``"xformers"``, ...) built
        with ``options``, or an ``AttentionBackend`` instance. An unknown name raises
        ``ComponentNotFoundError``, an unavailable backend ``RuntimeError`` with the reason, an
        option that does not fit some layer ``ValueError``; the current backend then stays.
        Models assigned to the pipeline later get the same instance.
        """
        from .attention import resolve_backend

        instance = resolve_backend(backend, **options)
        _give_backend([(n, m) for n, m in self._modules() if isinstance(m, Model)], instance)
        object.__setattr__(self, "_attention_backend", instance)

    @property
    def attention_backend(self) -> str:
        """The name of the attention backend in use (``"sdpa"`` unless one was set)."""
        from .attention import DEFAULT_BACKEND

        return self._attention_backend.name if self._attention_backend is not None else DEFAULT_BACKEND

    def enable_attention_slicing(self, slice_size: str | int | None = "auto") -> None:
        """Compute attention a few heads at a time (backend ``"sliced"``); ``None`` turns it off.

        ``slice_size``: ``"auto"`` (half the heads of each layer), ``"max"`` (one head at a
        time) or a number of heads per slice, at most the heads of every attention layer.
        """
        if slice_size is None:
            self.disable_attention_slicing()
            return
        self.set_attention_backend("sliced", slice_size=slice_size)

    def disable_attention_slicing(self) -> None:
        """Go back to the default backend if slicing is on (any other backend stays)."""
        if self.attention_backend == "sliced":
            self._reset_attention_backend()

    def enable_xformers_memory_efficient_attention(self, attention_op: Any = None) -> None:
        """Use xformers' memory-efficient attention (backend ``"xformers"``; needs xformers and CUDA)."""
        self.set_attention_backend("xformers", attention_op=attention_op)

    def disable_xformers_memory_efficient_attention(self) -> None:
        """Go back to the default backend if xformers is on (any other backend stays)."""
        if self.attention_backend == "xformers":
            self._reset_attention_backend()

    def _reset_attention_backend(self) -> None:
        from .attention import default_backend

        self.set_attention_backend(default_backend())

    # -- offloading -------------------------------------------------------------------
    @property
    def offload_strategy(self) -> OffloadStrategy | None:
        """The active ``OffloadStrategy``, or ``None``."""
        return self.__dict__.get("_offload_strategy")

    def enable_offload(
        self, strategy: str | OffloadStrategy, device: str | torch.device | None = None, **options: Any
    ) -> OffloadStrategy:
        """Apply an offload strategy (a registered name such as ``"model"`` or ``"sequential"``, or an instance).

        ``device`` is where forwards run: ``None`` is the current accelerator; ``"cpu"`` runs
        the same hooks without saving memory. A strategy already active is removed first.
        Returns the strategy instance.
        """
        from .offload import resolve_execution_device

        execution = resolve_execution_device(device)
        if isinstance(strategy, OffloadStrategy):
            if options:
                raise TypeError("options are only accepted with a strategy name, not with a strategy instance")
            instance = strategy
        else:
            instance = registry.get("offload_strategy", strategy)(**options)
        self.disable_offload()
        instance.apply(self, execution)
        object.__setattr__(self, "_offload_strategy", instance)
        return instance

    def disable_offload(self) -> None:
        """Remove the offload strategy's hooks; the components stay on the CPU (``pipe.to(...)`` moves them)."""
        strategy = self.offload_strategy
        if strategy is not None:
            object.__setattr__(self, "_offload_strategy", None)
            strategy.remove(self)

    def enable_model_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device = "cuda") -> None:
        """diffusers' name for ``enable_offload("model", ...)``: each component moves to ``device`` while it runs."""
        from .offload import resolve_execution_device

        self.enable_offload("model", device=resolve_execution_device(device, gpu_id=gpu_id))

    def enable_sequential_cpu_offload(self, gpu_id: int | None = None, device: str | torch.device = "cuda") -> None:
        """diffusers' name for ``enable_offload("sequential", ...)``: weights stream to ``device`` per module."""
        from .offload import resolve_execution_device

        self.enable_offload("sequential", device=resolve_execution_device(device, gpu_id=gpu_id))

    def remove_all_hooks(self) -> None:
        """diffusers' name for :meth:`disable_offload`."""
        self.disable_offload()

    # -- speed ------------------------------------------------------------------------
    def compile(self, mode: str | None = None, *, components: Sequence[str] | None = None, **options: Any) -> Self:
        """``Model.compile`` (regional by default) on every model component that declares repeated blocks.

        ``components`` names which ones (default: all that can); ``options`` go to
        :meth:`Model.compile` (``regional``, ``backend``, ``fullgraph``, ``dynamic``, ``options``).
        Returns ``self``.
        """
        models = {n: m for n, m in self._modules() if isinstance(m, Model)}
        if components is None:
            chosen = [n for n, m in models.items() if m.repeated_blocks or options.get("regional") is False]
        else:
            unknown = [n for n in components if n not in models]
            if unknown:
                raise ValueError(
                    f"{type(self).__name__}.compile(components=...): {unknown} are not model components of this "
                    f"pipeline; its model components are {sorted(models)}"
                )
            chosen = list(components)
        for name in chosen:
            models[name].compile(mode, **options)
        return self

    def fuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        """Fuse the attention projections of the ``unet`` and ``vae`` (diffusers' pipeline method)."""
        for name in self._fuse_targets(unet, vae):
            getattr(self, name).fuse_qkv_projections()

    def unfuse_qkv_projections(self, unet: bool = True, vae: bool = True) -> None:
        """Undo :meth:`fuse_qkv_projections` exactly."""
        for name in self._fuse_targets(unet, vae):
            getattr(self, name).unfuse_qkv_projections()

    def _fuse_targets(self, unet: bool, vae: bool) -> list[str]:
        wanted = [n for n, on in (("unet", unet), ("vae", vae)) if on]
        return [n for n in wanted if isinstance(self.__dict__.get(n), Model)]

    @property
    def step_cache(self) -> StepCache | None:
        """The step cache in use (``enable_step_cache``), or ``None``."""
        return self.__dict__.get("_step_cache")

    def enable_step_cache(self, cache: str | StepCache, **options: Any) -> StepCache:
        """Reuse work between denoising steps: a registered cache name (``"deepcache"``) built with
        ``options``, or a ``StepCache`` instance. A cache already on is removed first; a cache
        that cannot serve this pipeline's models raises, and then no cache is on.

        The cache keeps what it reuses per pipeline call (see :mod:`diffkit.step_cache`), so
        concurrent calls stay independent. Returns the cache instance.
        """
        from .step_cache import resolve_step_cache

        instance = resolve_step_cache(cache, **options)
        self.disable_step_cache()
        instance.apply(self)
        object.__setattr__(self, "_step_cache", instance)
        return instance

    def disable_step_cache(self) -> None:
        """Remove the step cache; the models are restored exactly."""
        cache = self.step_cache
        if cache is not None:
            object.__setattr__(self, "_step_cache", None)
            cache.remove(self)

    # -- progress ---------------------------------------------------------------------
    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Replace the keyword arguments given to tqdm (``disable=True``, ``desc=...``, ``leave=...``)."""
        object.__setattr__(self, "_progress_bar_config", dict(kwargs))

    def progress_bar(self, iterable: Iterable[Any] | None = None, total: int | None = None) -> Any:
        """A tqdm bar over the denoising loop; its length is what :attr:`num_timesteps` reports."""
        from tqdm.auto import tqdm

        if iterable is None and total is None:
            raise ValueError("progress_bar() needs an iterable or a total")
        length = total if total is not None else len(iterable) if hasattr(iterable, "__len__") else None
        if length is not None:
            _last_call(self)["num_timesteps"] = int(length)
        if iterable is not None:
            return tqdm(iterable, **self._progress_bar_config)
        return tqdm(total=total, **self._progress_bar_config)

    numpy_to_pil = staticmethod(numpy_to_pil)

    # -- the last call, per thread --------------------------------------------------------
    @property
    def num_timesteps(self) -> int | None:
        """How many denoising steps the last call made *in this thread* ran; ``None`` before one.

        diffusers keeps this on the pipeline for the last call of any thread; here each thread
        reads the value of its own last call, so threads sharing one pipeline never see each
        other's.
        """
        return _last_call(self).get("num_timesteps")

    @property
    def guidance_scale(self) -> float | None:
        """The ``guidance_scale`` of the last call made in this thread (per thread, like :attr:`num_timesteps`).

        ``None`` before a call, and for pipelines whose ``__call__`` takes no ``guidance_scale``.
        """
        return _last_call(self).get("guidance_scale")

    def run_step_callback(
        self,
        callback: Callable[..., dict[str, Any]] | None,
        step: int,
        timestep: torch.Tensor,
        tensors: dict[str, torch.Tensor],
        names: Sequence[str],
    ) -> dict[str, torch.Tensor]:
        """Call ``callback_on_step_end(pipe, step, timestep, {name: tensor})``; apply what it returns.

        ``names`` must be among ``_callback_tensor_inputs``; returned keys replace the tensors.
        """
        if callback is None:
            return tensors
        unknown = [n for n in names if n not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among {list(self._callback_tensor_inputs)}"
            )
        returned = callback(self, step, timestep, {n: tensors[n] for n in names}) or {}
        return {**tensors, **{k: v for k, v in returned.items() if k in tensors}}

    def maybe_free_model_hooks(self) -> None:
        """Return offloaded components to their resting place; called at the end of every call."""
        strategy = getattr(self, "_offload_strategy", None)
        if strategy is not None:
            strategy.free(self)

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs: Any) -> Path:
        """Fetch what :meth:`from_pretrained` would load from a Hub repo; returns the local folder."""
        from .pipeline_loading import download_pipeline

        return download_pipeline(cls, pretrained_model_name, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike[str], **kwargs: Any) -> Self:
        """Load a pipeline from a folder, a Hub repo id, or a name registered by a plugin.

        Keyword arguments: loading options (``torch_dtype`` — a dtype, ``"auto"`` or a dict by
        component with ``"default"`` —, ``variant``, ``use_safetensors``, ``allow_pickle``,
        ``revision``, ``cache_dir``, ``force_download``, ``local_files_only``, ``token``,
        ``proxies``, ``low_cpu_mem_usage``, ``device_map``, ``allow_external_symlinks`` to read
        files that link outside the folder), component objects that replace loading (``None``
        for optional components), and pipeline settings.
        """
        from .pipeline_loading import load_pipeline

        return load_pipeline(cls, pretrained_model_name_or_path, **kwargs)

    # -- saving -----------------------------------------------------------------------
    def model_index(self) -> dict[str, Any]:
        """What ``save_pretrained`` writes as ``model_index.json``."""
        from .pipeline_loading import component_entry

        code = code_file_of(type(self))
        data: dict[str, Any] = {
            "_class_name": type(self).__name__ if code is None else [code[0], type(self).__name__],
            "_diffusers_version": self._index_meta.get("_diffusers_version", DIFFUSERS_FORMAT_VERSION),
        }
        data.update(self._settings)
        for name, component in self.components.items():
            data[name] = list(component_entry(component))
        return data

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str | None = None,
        push_to_hub: bool = False,
        **push_kwargs: Any,
    ) -> Path:
        """Write every component and ``model_index.json``; atomic: a failure changes nothing on disk."""
        from .pipeline_loading import save_component

        target = Path(save_directory)
        with atomic_save(target) as tmp:
            for name, component in self.components.items():
                if component is not None:
                    save_component(
                        component, tmp / name, safe_serialization=safe_serialization, variant=variant,
                        max_shard_size=max_shard_size,
                    )
            code = code_file_of(type(self))
            if code is not None:  # a pipeline class from remote code: the saved checkpoint names and holds it
                shutil.copyfile(code[1], tmp / f"{code[0]}.py")
            write_json(tmp / MODEL_INDEX, self.model_index())
        if push_to_hub:
            from .hub import push_folder

            push_folder(target, **push_kwargs)
        return target

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Save into a temporary folder and upload it to ``repo_id`` through huggingface_hub."""
        import tempfile

        from .hub import push_folder

        upload_options = {k: kwargs.pop(k) for k in ("commit_message", "private", "token", "create_pr") if k in kwargs}
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "checkpoint", **kwargs)
            return push_folder(folder, repo_id, **upload_options)

    def __repr__(self) -> str:
        parts = ", ".join(f"{n}={type(c).__name__ if c is not None else None}" for n, c in self.components.items())
        return f"{type(self).__name__}({parts})"


@functools.cache
def _step_parameters(state_type: type) -> frozenset[str]:
    signature = inspect.signature(state_type.step)
    if any(p.kind is p.VAR_KEYWORD for p in signature.parameters.values()):
        return frozenset({"*"})
    return frozenset(signature.parameters)


def step_kwargs(state: Any, **candidates: Any) -> dict[str, Any]:
    """The ``candidates`` (``eta``, ``generator``, ...) that ``state.step`` accepts.

    Lets a pipeline drive any scheduler: e.g. PNDM's step takes no generator, DDIM's takes eta.
    """
    accepted = _step_parameters(type(state))
    return dict(candidates) if "*" in accepted else {k: v for k, v in candidates.items() if k in accepted}


def image_noise_shape(model_config: Any, batch_size: int) -> tuple[int, ...]:
    """``(batch, in_channels, height, width)`` from a model config (``sample_size`` int or pair)."""
    size = model_config.sample_size
    spatial = (size, size) if isinstance(size, int) else tuple(size)
    return (batch_size, model_config.in_channels, *spatial)


def _give_backend(models: list[tuple[str, Model]], backend: Any) -> None:
    """Check that ``backend`` fits every attention layer of ``models``, then give it to all of them."""
    from .attention import attention_layers

    for name, model in models:  # all models first: one that does not fit must leave every model unchanged
        for path, layer in attention_layers(model):
            backend.check_layer(layer, f"{name}.{path}")
    for _, model in models:
        model.set_attention_backend(backend)


#: per thread: pipeline -> what its last call in that thread recorded (``num_timesteps``, ``guidance_scale``)
_LAST_CALLS = threading.local()


def _last_call(pipe: Pipeline) -> dict[str, Any]:
    calls = getattr(_LAST_CALLS, "calls", None)
    if calls is None:
        calls = _LAST_CALLS.calls = weakref.WeakKeyDictionary()
    return calls.setdefault(pipe, {})


def _checked_call(call: Callable[..., Any]) -> Callable[..., Any]:
    """``call`` with its ``num_inference_steps`` and ``generator`` arguments checked first.

    Every pipeline gets the same clear errors (``generator=42``, ``num_inference_steps=2.5``)
    before any work starts, instead of a torch error from deep inside the loop. It also starts
    this thread's record of the call (:attr:`Pipeline.guidance_scale`, :attr:`Pipeline.num_timesteps`).
    """
    signature = inspect.signature(call)
    guidance = signature.parameters.get("guidance_scale")

    @functools.wraps(call)
    def checked(self: Pipeline, *args: Any, **kwargs: Any) -> Any:
        try:
            arguments = signature.bind_partial(self, *args, **kwargs).arguments
        except TypeError:
            arguments = {}  # the call itself reports the wrong arguments
        steps = arguments.get("num_inference_steps")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral)):
            raise TypeError(f"num_inference_steps must be a whole number of steps, got {steps!r}")
        check_generator(arguments.get("generator"))
        record = _last_call(self)
        outermost = not record.get("running")  # a subclass's __call__ calling its base is one call
        if outermost:
            record.clear()
            record["running"] = True
        if guidance is not None and "guidance_scale" not in record:
            record["guidance_scale"] = arguments.get("guidance_scale", guidance.default)
        try:
            if not outermost:
                return call(self, *args, **kwargs)
            with call_scope(self.__dict__.get("_step_cache")):
                return call(self, *args, **kwargs)
        finally:
            if outermost:
                record.pop("running", None)

    checked.__diffkit_checked__ = True  # type: ignore[attr-defined]
    return checked


def _check_device(device: str | int | torch.device, where: str) -> None:
    """Refuse a device that does not exist here with one clear error (not torch's assertion)."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{where}({device!r}): not a device ({exc})") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise RuntimeError(f"{where}({str(device)!r}): CUDA is not available ({why}); use 'cpu'")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise RuntimeError(f"{where}({str(device)!r}): MPS (Apple GPU) is not available here; use 'cpu'")


def _module_device(module: torch.nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


DiffusionPipeline = Pipeline


"""``Model``: a torch module with a typed config and diffusers-compatible weights on disk.

Loading builds the module on the ``meta`` device and assigns the checkpoint tensors in the
requested dtype and device directly: no random initialisation, no float32 detour.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

import torch

from ._fs import atomic_save, check_folder_links, recover
from .config import Config, Configurable
from .dtypes import one_dtype, parse_dtype
from .errors import CheckpointError
from .finite import check_weights
from .weights import checkpoint_dtype, find_weights, read_state_dict, write_state_dict

logger = logging.getLogger("diffkit.model")


class Model(torch.nn.Module, Configurable):
    """Base class of every diffkit model.

    Subclasses set ``config_class`` and build their layers in ``__init__(self, config=None,
    **kwargs)`` after calling ``super().__init__(config, **kwargs)``; ``self.config`` is then
    the validated config. Their state-dict keys and shapes are those of the diffusers class of
    the same name, so checkpoints load unchanged.
    """

    config_class: ClassVar[type[Config]] = Config
    config_name: ClassVar[str] = "config.json"
    #: weight file stem: diffusers models use ``diffusion_pytorch_model``
    weights_name: ClassVar[str] = "diffusion_pytorch_model"
    #: class names of the blocks that repeat through the model: what regional compilation compiles
    repeated_blocks: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        torch.nn.Module.__init__(self)
        self._init_config(config, kwargs)

    # -- properties -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for tensor in self._tensors():
            return tensor.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for tensor in self._tensors():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def _tensors(self):
        yield from self.parameters()
        yield from self.buffers()

    # -- attention --------------------------------------------------------------------
    def set_attention_backend(self, backend: Any = "sdpa", **options: Any) -> Any:
        """Give every attention layer of this model the same backend instance.

        ``backend`` is a registered name or an ``AttentionBackend`` object; returns the instance.
        Every layer is checked first (e.g. a slice size larger than some layer's heads raises
        ``ValueError`` naming that layer), so a refused backend leaves all layers as they were.
        """
        from .attention import attention_layers, resolve_backend

        instance = resolve_backend(backend, **options)
        layers = attention_layers(self)
        for path, layer in layers:
            instance.check_layer(layer, f"{type(self).__name__}.{path}")
        for _, layer in layers:
            layer.attention_backend = instance
        return instance

    # -- speed ------------------------------------------------------------------------
    def compile(  # type: ignore[override]
        self,
        mode: str | None = None,
        *,
        regional: bool = True,
        backend: str | Any = "inductor",
        fullgraph: bool = True,
        dynamic: bool | None = False,
        options: dict[str, Any] | None = None,
    ) -> Self:
        """``torch.compile`` this model in place; returns ``self``.

        Regional (the default): each block named by :attr:`repeated_blocks` is compiled on its
        own. Blocks of one class share their forward's code, so dynamo compiles one graph per
        distinct block shape and reuses it for every block of that shape: warm-up takes seconds,
        and the timestep, which only the (uncompiled) embedding sees, never causes a recompile.
        ``fullgraph=True`` makes a graph break an error instead of a silent slowdown.
        ``regional=False`` compiles the whole forward as one graph (longer warm-up; with
        ``mode="reduce-overhead"`` inductor replays it as a CUDA graph for static shapes).
        ``mode`` and ``options`` are ``torch.compile``'s (one or the other).
        """
        settings: dict[str, Any] = {"backend": backend, "fullgraph": fullgraph, "dynamic": dynamic}
        if mode is not None:
            settings["mode"] = mode
        if options is not None:
            settings["options"] = options
        if not regional:
            torch.nn.Module.compile(self, **settings)
            return self
        blocks = self.repeated_block_modules()
        if not blocks:
            raise ValueError(
                f"{type(self).__name__}.compile(regional=True): this model declares no repeated blocks "
                f"(repeated_blocks={self.repeated_blocks!r}); pass regional=False to compile the whole forward"
            )
        _allow_recompiles(blocks)
        for block in blocks:
            block.compile(**settings)
        return self

    def repeated_block_modules(self) -> list[torch.nn.Module]:
        """The sub-modules whose class name is in :attr:`repeated_blocks`, in module order."""
        names = set(self.repeated_blocks)
        return [m for m in self.modules() if m is not self and type(m).__name__ in names]

    def fuse_qkv_projections(self) -> None:
        """Compute each attention layer's projections with one matmul: q, k, v together for
        self-attention, k and v for cross-attention (diffusers' ``fuse_qkv_projections``).

        The fused weights are concatenated copies kept outside the state dict, so saving and
        :meth:`unfuse_qkv_projections` see exactly the original parameters.
        """
        for layer in self._fusable_layers():
            layer.fuse_projections()

    def unfuse_qkv_projections(self) -> None:
        """Drop the fused projections; the layers compute as before :meth:`fuse_qkv_projections`."""
        for layer in self._fusable_layers():
            layer.unfuse_projections()

    def _fusable_layers(self) -> list[Any]:
        return [m for m in self.modules() if callable(getattr(m, "fuse_projections", None))]

    # -- state-dict hooks -------------------------------------------------------------
    @classmethod
    def convert_state_dict(cls, state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
        """Rename keys of older checkpoint layouts; the default keeps them as they are."""
        return state

    # -- loading ----------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        subfolder: str | None = None,
        *,
        torch_dtype: Any = None,
        dtype: Any = None,
        variant: str | None = None,
        use_safetensors: bool | None = None,
        allow_pickle: bool = False,
        device_map: Any = None,
        low_cpu_mem_usage: bool = True,
        output_loading_info: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool | None = None,
        token: str | bool | None = None,
        proxies: dict[str, str] | None = None,
        allow_external_symlinks: bool = False,
        **config_overrides: Any,
    ) -> Self | tuple[Self, dict[str, list[Any]]]:
        """Load a model from a folder (or ``folder/subfolder``) or a Hub repo id.

        Files that link outside the folder are refused (the Hub cache's links into its blobs
        excepted) unless ``allow_external_symlinks=True``. Weights holding NaN or Inf warn.
        ``dtype`` is diffusers 0.42's name for ``torch_dtype``; either works.
        """
        from .hub import resolve_model_folder

        torch_dtype = one_dtype(torch_dtype, dtype)

        folder = resolve_model_folder(
            pretrained_model_name_or_path,
            subfolder=subfolder,
            config_name=cls.config_name,
            weights_name=cls.weights_name,
            variant=variant,
            use_safetensors=use_safetensors,
            allow_pickle=allow_pickle,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            proxies=proxies,
        )
        recover(folder)  # finish or clean up a save into this folder that was killed
        if not allow_external_symlinks:
            check_folder_links(pretrained_model_name_or_path, subfolder, folder, [cls.config_name])
        config_path = folder / cls.config_name
        config = cls.config_class.from_dict(
            cls.load_config(folder), source=config_path, **config_overrides
        )
        files = find_weights(
            folder, cls.weights_name, variant=variant, use_safetensors=use_safetensors, allow_pickle=allow_pickle
        )
        if not allow_external_symlinks:
            check_folder_links(pretrained_model_name_or_path, subfolder, folder, [f.name for f in files])
        dtype = parse_dtype(torch_dtype)
        if dtype == "auto":
            dtype = checkpoint_dtype(files)
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(
                f"torch_dtype={dtype} is not a floating-point dtype: {cls.__name__} weights load as float32, "
                "float16, bfloat16 or float64 (quantized integer weights are not supported)"
            )
        device = _single_device(device_map)
        model, info = cls._from_state(config, files, dtype=dtype, device=device, low_cpu_mem_usage=low_cpu_mem_usage)
        check_weights(model, f"component {folder.name!r} ({cls.__name__} from {folder})")
        model.config._meta["_name_or_path"] = str(pretrained_model_name_or_path)
        model.eval()
        return (model, info) if output_loading_info else model

    @classmethod
    def _from_state(
        cls,
        config: Config,
        files: list[Path],
        *,
        dtype: torch.dtype | None,
        device: torch.device | None,
        low_cpu_mem_usage: bool = True,
    ) -> tuple[Self, dict[str, list[Any]]]:
        target_device = device or torch.device("cpu")
        state = read_state_dict(files, device="cpu" if target_device.type == "meta" else target_device)
        state = cls.convert_state_dict(state, config)
        if low_cpu_mem_usage:
            with torch.device("meta"), _SkipInit():
                model = cls(config)
        else:
            model = cls(config)
        expected = model.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        where = ", ".join(str(f) for f in files)
        if missing:
            shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
            raise CheckpointError(
                f"{where} lacks {len(missing)} tensor(s) that {cls.__name__} with this config needs: {shown}. "
                "Is config.json the one these weights were trained with?"
            )
        if unexpected:
            logger.warning("%s: ignoring %d unexpected tensor(s): %s", where, len(unexpected), ", ".join(unexpected[:10]))
        for key, want in expected.items():
            got = state[key]
            if want.is_floating_point() and not got.is_floating_point():
                raise CheckpointError(
                    f"{where}: tensor {key!r} is stored as {got.dtype}, but {cls.__name__} needs floating-point "
                    "values there; these weights are not a checkpoint of this model (or were converted wrongly)"
                )
            if tuple(got.shape) != tuple(want.shape):
                raise CheckpointError(
                    f"{where}: tensor {key!r} has shape {tuple(got.shape)} but {cls.__name__} with this "
                    f"config expects {tuple(want.shape)}; config.json and the weights disagree"
                )
        _assign(model, {key: _cast(state[key], want, dtype, target_device) for key, want in expected.items()})
        leftovers = [name for name, t in model.named_buffers() if t.is_meta] + [
            name for name, t in model.named_parameters() if t.is_meta
        ]
        if leftovers:
            raise CheckpointError(f"{cls.__name__}: no checkpoint value for {', '.join(leftovers)}")
        info = {"missing_keys": [], "unexpected_keys": unexpected, "mismatched_keys": [], "error_msgs": []}
        return model, info

    # -- saving -----------------------------------------------------------------------
    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        safe_serialization: bool = True,
        variant: str | None = None,
        max_shard_size: int | str = "10GB",
        push_to_hub: bool = False,
        **push_kwargs: Any,
    ) -> Path:
        """Write ``config.json`` and the weights, atomically (an interrupted save changes nothing)."""
        target = Path(save_directory)
        with atomic_save(target) as tmp:
            self.save_config(tmp)
            write_state_dict(
                self.state_dict(),
                tmp,
                self.weights_name,
                safe_serialization=safe_serialization,
                variant=variant,
                max_shard_size=max_shard_size,
            )
        if push_to_hub:
            from .hub import push_folder

            push_folder(target, **push_kwargs)
        return target


#: regionally compiled blocks per block class: each distinct shape among them may need its own graph
_COMPILED_BLOCKS: dict[type, int] = {}


def _allow_recompiles(blocks: list[torch.nn.Module]) -> None:
    """Raise dynamo's per-code recompile limit to twice the number of compiled blocks of one class.

    Every block of a class shares one ``forward`` code object, which gets a graph per distinct
    input, and inference-mode tensors (the pipelines') and ordinary ones get separate graphs;
    past the limit (8 by default) dynamo runs the remaining inputs eagerly, or fails under
    ``fullgraph=True``.
    """
    import torch._dynamo

    for block in blocks:
        _COMPILED_BLOCKS[type(block)] = _COMPILED_BLOCKS.get(type(block), 0) + 1
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), 2 * max(_COMPILED_BLOCKS.values())))


#: torch.nn.init's in-place initialisers (``kaiming_uniform_``, ``zeros_``...)
_INITIALISERS = frozenset(
    getattr(torch.nn.init, name)
    for name in dir(torch.nn.init)
    if name.endswith("_") and not name.startswith("_") and callable(getattr(torch.nn.init, name))
)


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Return torch.nn.init's initialisers' tensors untouched while a model is built on ``meta``.

    Random initialisation of meta tensors computes nothing but still costs about a third of
    the build (each initialiser dispatches through torch's decompositions); the checkpoint
    then replaces every tensor anyway. A torch function mode is per thread, so a model that
    another thread builds meanwhile is initialised as usual.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func in _INITIALISERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def _cast(tensor: torch.Tensor, like: torch.Tensor, dtype: torch.dtype | None, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``; floating tensors in ``dtype`` (default: the module's own dtype)."""
    if tensor.is_floating_point() and like.is_floating_point():
        return tensor.to(device=device, dtype=dtype or like.dtype)
    return tensor.to(device)


def _assign(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Put checkpoint tensors in place of the (meta) parameters and buffers, without copying.

    Keys and shapes were checked by the caller; this replaces ``load_state_dict(assign=True)``,
    whose per-module machinery costs more than the assignment itself.
    """
    modules = dict(model.named_modules())
    for key, tensor in tensors.items():
        owner, _, leaf = key.rpartition(".")
        module = modules[owner]
        current = module._parameters.get(leaf)
        if current is not None:
            module._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=current.requires_grad)
        else:
            module._buffers[leaf] = tensor


def _single_device(device_map: Any) -> torch.device | None:
    if device_map is None:
        return None
    if isinstance(device_map, (str, int, torch.device)):
        if isinstance(device_map, str) and device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
            raise ValueError(
                f"device_map={device_map!r} is not supported: pass one device (e.g. 'cpu', 'cuda', 'cuda:1') "
                "or use an offload strategy (pipe.enable_model_cpu_offload())"
            )
        return torch.device(device_map) if not isinstance(device_map, int) else torch.device("cuda", device_map)
    raise ValueError(f"device_map must be None or a single device, got {device_map!r}")

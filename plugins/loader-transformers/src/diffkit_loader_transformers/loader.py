"""``TransformersLoader``: the component loader of ``model_index.json`` library ``transformers``.

Classes are resolved by name from the ``transformers`` package only (anything it exports
with ``from_pretrained``); a JSON file never makes us import another module. Models load
from safetensors unless the caller opted in to pickle, and only from files present in the
component folder (``local_files_only``: the core downloads, transformers never does).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from diffkit.errors import CheckpointError
from diffkit.loader import ComponentLoader
from diffkit.weights import SAFETENSORS, weight_file_candidates

from .clip import LEGACY_PREFIX
from .files import WEIGHTS_BASE, files_needed, model_weight_format

def _transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError(
            f"components of library 'transformers' need the transformers package, which cannot be imported "
            f"({exc}); install it with: {sys.executable} -m pip install 'transformers>=4.40'"
        ) from None
    return transformers


def _is_subclass_of(cls: type, base_name: str) -> bool:
    base = getattr(_transformers(), base_name, None)
    return isinstance(base, type) and issubclass(cls, base)


def _dtype_keyword() -> str:
    """``dtype`` since transformers 4.56 (``torch_dtype`` is deprecated there), ``torch_dtype`` before."""
    from packaging.version import Version

    return "dtype" if Version(_transformers().__version__).release >= (4, 56) else "torch_dtype"


def resolve_class(class_name: str) -> type:
    """The class ``transformers`` exports as ``class_name``; a clear error for anything else.

    ``<X>FeatureExtractor`` names of image models, which transformers 5 removed (they were
    unchanged subclasses of ``<X>ImageProcessor``), resolve to ``<X>ImageProcessor``: SD 1.x
    checkpoints name ``CLIPFeatureExtractor``.
    """
    if not isinstance(class_name, str) or not class_name.isidentifier() or class_name.startswith("_"):
        raise CheckpointError(f"{class_name!r} is not a class name transformers could export")
    transformers = _transformers()
    names = [class_name]
    if class_name.endswith("FeatureExtractor"):
        names.append(class_name.removesuffix("FeatureExtractor") + "ImageProcessor")
    cls = None
    for name in names:
        try:
            cls = getattr(transformers, name)
            break
        except AttributeError:
            continue
        except ImportError as exc:  # an export whose optional dependency is missing
            raise CheckpointError(f"transformers.{name} cannot be imported: {exc}") from None
    if cls is None:
        raise CheckpointError(f"transformers {transformers.__version__} has no class {class_name!r}")
    if not (isinstance(cls, type) and cls.__module__.split(".")[0] == "transformers"
            and callable(getattr(cls, "from_pretrained", None))):
        raise CheckpointError(f"transformers.{class_name} is not a class with from_pretrained")
    return cls


class TransformersLoader(ComponentLoader):
    """Loads and saves components stored as ``["transformers", ClassName]``."""

    library = "transformers"

    def can_load(self, class_name: str) -> bool:
        _transformers()  # a missing transformers is its own error, not an unknown class
        try:
            resolve_class(class_name)
        except CheckpointError:
            return False
        return True

    def files_needed(self, class_name: str, names: set[str], *, variant: str | None = None,
                     use_safetensors: bool | None = None, allow_pickle: bool = False) -> list[str]:
        """File names (relative to the component folder) that loading ``class_name`` reads."""
        return files_needed(names, variant, use_safetensors, allow_pickle)

    def load(self, class_name: str, folder: Path, *, torch_dtype: Any = None, variant: str | None = None,
             use_safetensors: bool | None = None, allow_pickle: bool = False, **options: Any) -> Any:
        """``transformers.<class_name>.from_pretrained(folder)`` with diffkit's loading rules.

        ``torch_dtype=None`` loads models in float32, like every diffkit model (transformers 5
        would otherwise keep the checkpoint's dtype).
        """
        folder = Path(folder)
        cls = resolve_class(class_name)
        if not folder.is_dir():
            raise CheckpointError(f"component folder {folder} for transformers.{class_name} does not exist")
        kwargs: dict[str, Any] = {"local_files_only": True}
        if _is_subclass_of(cls, "PreTrainedModel"):
            if not (folder / "config.json").is_file():
                raise CheckpointError(f"{folder} has no config.json: it is not a transformers {class_name} folder")
            fmt = model_weight_format(folder, variant, use_safetensors, allow_pickle)
            kwargs.update(use_safetensors=fmt == SAFETENSORS, variant=variant)
            kwargs[_dtype_keyword()] = _torch_dtype(torch_dtype)
        elif _is_subclass_of(cls, "PreTrainedTokenizerBase"):
            _check_vocabulary(cls, folder)
        try:
            component = cls.from_pretrained(str(folder), **kwargs)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"transformers.{class_name} cannot be loaded from {folder}: {exc}") from exc
        if hasattr(component, "eval"):
            component.eval()
        return component

    def owns(self, component: Any) -> bool:
        cls = type(component)
        if cls.__module__.split(".")[0] != "transformers" or not hasattr(component, "save_pretrained"):
            return False
        return getattr(_transformers(), cls.__name__, None) is cls

    def entry_class_name(self, component: Any) -> str:
        """The class name ``model_index.json`` records for ``component``.

        transformers 5 hands out backend classes for image processors (``CLIPImageProcessorPil``
        without torchvision, ``...Fast`` with it); the entry names the class they stand for,
        which every transformers version resolves.
        """
        name = type(component).__name__
        for suffix in ("ImageProcessorPil", "ImageProcessorFast"):
            if name.endswith(suffix):
                base = name.removesuffix(suffix) + "ImageProcessor"
                if isinstance(getattr(_transformers(), base, None), type):
                    return base
        return name

    def save(self, component: Any, folder: Path, *, safe_serialization: bool = True, variant: str | None = None,
             max_shard_size: int | str | None = None, **options: Any) -> None:
        """``save_pretrained`` into ``folder``: safetensors, optional variant, in the layout the Hub uses."""
        folder = Path(folder)
        name = type(component).__name__
        if not _is_subclass_of(type(component), "PreTrainedModel"):
            component.save_pretrained(str(folder))
            return
        if not safe_serialization:
            raise CheckpointError(
                f"transformers.{name} is saved as safetensors only; call save_pretrained with safe_serialization=True"
            )
        kwargs: dict[str, Any] = {"variant": variant}
        if max_shard_size is not None:
            kwargs["max_shard_size"] = max_shard_size
        component.save_pretrained(str(folder), **kwargs)
        prefix = LEGACY_PREFIX.get(name)
        if prefix is not None:
            add_legacy_prefix(folder, prefix, variant)


def _torch_dtype(torch_dtype: Any) -> Any:
    import torch

    from diffkit.dtypes import parse_dtype

    dtype = parse_dtype(torch_dtype)
    return torch.float32 if dtype is None else dtype


def _check_vocabulary(cls: type, folder: Path) -> None:
    """A tokenizer folder must hold its vocabulary: transformers would otherwise build an empty one."""
    files = dict(getattr(cls, "vocab_files_names", {}) or {})
    if not files:
        return
    if (folder / "tokenizer.json").is_file():
        return
    required = [name for key, name in files.items() if key != "tokenizer_file"]
    missing = [name for name in required if not (folder / name).is_file()]
    if missing or not required:
        wanted = ", ".join(missing) if missing else "tokenizer.json"
        raise CheckpointError(
            f"tokenizer folder {folder} lacks its vocabulary: {cls.__name__} needs tokenizer.json or "
            f"{' + '.join(required) or 'tokenizer.json'} (missing: {wanted})"
        )


def add_legacy_prefix(folder: Path, prefix: str, variant: str | None) -> None:
    """Rewrite saved weights so every key starts with ``prefix.`` (the transformers-4 layout).

    transformers 5 saves a freshly built ``CLIPTextModel`` without ``text_model.``; transformers 4
    (what most diffusers installs use) would then silently start from random weights. Both
    versions load the prefixed layout, so that is what we write.
    """
    from safetensors import safe_open
    from safetensors.torch import save_file

    candidates = weight_file_candidates(WEIGHTS_BASE[SAFETENSORS], SAFETENSORS, variant)
    index_path, single = folder / candidates[0], folder / candidates[-1]
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
        shards = sorted(set(index["weight_map"].values()))
    elif single.is_file():
        index, shards = None, [single.name]
    else:
        raise CheckpointError(f"transformers wrote no {single.name} into {folder}")

    def renamed(key: str) -> str:
        return key if key.startswith(prefix + ".") else f"{prefix}.{key}"

    for shard in shards:
        path = folder / shard
        with safe_open(str(path), framework="pt") as fh:
            keys = list(fh.keys())
            if all(k == renamed(k) for k in keys):
                continue
            metadata = fh.metadata() or {"format": "pt"}
            tensors = {renamed(k): fh.get_tensor(k) for k in keys}
        save_file(tensors, str(path), metadata=metadata)
    if index is not None:
        index["weight_map"] = {renamed(k): v for k, v in index["weight_map"].items()}
        index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")

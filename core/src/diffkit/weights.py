"""Weight files: find, read and write state dicts in the diffusers/transformers layouts.

safetensors is the default; pickle (``.bin``) is read only when the caller opted in, and then
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import fnmatch
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._fs import write_error
from .errors import CheckpointError, MissingFileError

if TYPE_CHECKING:
    import torch

SAFETENSORS = "safetensors"
PICKLE = "bin"
#: the shard suffix every writer uses (huggingface_hub, diffusers, transformers): ``-00001-of-00002``
SHARD_GLOB = "-" + "[0-9]" * 5 + "-of-" + "[0-9]" * 5


def with_variant(filename: str, variant: str | None) -> str:
    """Insert ``variant`` before the last extension: ``a.safetensors`` -> ``a.fp16.safetensors``."""
    if not variant:
        return filename
    parts = filename.split(".")
    return ".".join([*parts[:-1], variant, parts[-1]])


def index_name(base: str, ext: str, variant: str | None) -> str:
    # a.safetensors.index.json -> a.safetensors.index.fp16.json
    return with_variant(f"{base}.{ext}.index.json", variant)


def _legacy_index_name(base: str, ext: str, variant: str) -> str:
    return f"{base}.{ext}.{variant}.index.json"


def weight_file_candidates(base: str, ext: str, variant: str | None) -> list[str]:
    """The files that would hold a component's weights, in lookup order."""
    names = [index_name(base, ext, variant), with_variant(f"{base}.{ext}", variant)]
    if variant:
        names.insert(1, _legacy_index_name(base, ext, variant))
    return names


def _formats(use_safetensors: bool | None, allow_pickle: bool) -> list[str]:
    exts = [SAFETENSORS] if use_safetensors is not False else []
    if use_safetensors is not True and allow_pickle:
        exts.append(PICKLE)
    return exts


def select_weight_files(
    names: set[str], base: str, variant: str | None, use_safetensors: bool | None, allow_pickle: bool
) -> list[str]:
    """From a folder's file names, the ones that hold the weights (index plus shards, or one file).

    Used where the files are not on disk yet (a Hub listing); an empty list means none fit.
    """
    for ext in _formats(use_safetensors, allow_pickle):
        for name in weight_file_candidates(base, ext, variant):
            if name not in names:
                continue
            if ".index." not in name:
                return [name]
            stem = f"{base}.{variant}" if variant else base
            shards = [n for n in names if fnmatch.fnmatch(n, f"{stem}{SHARD_GLOB}.{ext}")]
            if variant:
                shards += [n for n in names if fnmatch.fnmatch(n, f"{base}{SHARD_GLOB}.{variant}.{ext}")]
            return [name, *sorted(shards)]
    return []


def find_weights(
    folder: Path,
    base: str,
    *,
    variant: str | None = None,
    use_safetensors: bool | None = None,
    allow_pickle: bool = False,
) -> list[Path]:
    """The weight files of one component folder, sharded or not.

    ``use_safetensors=None`` means safetensors, with pickle only if ``allow_pickle``;
    ``use_safetensors=False`` means pickle, which also needs ``allow_pickle``.
    """
    for ext in _formats(use_safetensors, allow_pickle):
        for name in weight_file_candidates(base, ext, variant):
            path = folder / name
            if not path.is_file():
                continue
            if ".index." in name:
                return _shards_from_index(path)
            return [path]
    # Nothing usable: say precisely what is there and what to do.
    present = sorted(p.name for p in folder.glob(f"{base}*")) if folder.is_dir() else []
    wanted = with_variant(f"{base}.{SAFETENSORS}", variant)
    if not folder.is_dir():
        raise MissingFileError(f"weights folder {folder} does not exist")
    pickles = [n for n in present if n.endswith(".bin") or ".bin." in n]
    if pickles and not (allow_pickle and use_safetensors is False):
        raise MissingFileError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), no {wanted}. Pickle files can run "
            "code when loaded; to load them anyway pass use_safetensors=False, allow_pickle=True "
            "(they are then read with torch.load(weights_only=True))."
        )
    hint = f" (found: {', '.join(present)})" if present else ""
    raise MissingFileError(f"no weight file {wanted} in {folder}{hint}")


def _shards_from_index(index_path: Path) -> list[Path]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"shard index {index_path} is malformed: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"shard index {index_path} is malformed: its JSON is nested too deeply") from None
    shards = []
    for shard in sorted(set(weight_map.values())):
        if not isinstance(shard, str) or "/" in shard or "\\" in shard or shard in ("", ".", ".."):
            raise CheckpointError(f"shard index {index_path} names an invalid shard file {shard!r}")
        path = index_path.parent / shard
        if not path.is_file():
            raise MissingFileError(f"shard {path} listed in {index_path.name} is missing")
        shards.append(path)
    return shards


def read_state_dict(files: list[Path], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read and merge the tensors of ``files`` (safetensors, or opted-in pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            if path.name.endswith(".safetensors"):
                part = load_file(str(path), device=str(device))
            else:
                part = _load_pickle(path, device)
        except CheckpointError:
            raise
        except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as exc:
            raise CheckpointError(f"weight file {path} cannot be read (truncated or corrupt?): {exc}") from None
        if not isinstance(part, dict):
            raise CheckpointError(f"weight file {path} does not hold a state dict")
        state.update(part)
    return state


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_UNSAFE_GLOBAL = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def _load_pickle(path: Path, device: Any) -> Any:
    """``torch.load(weights_only=True)`` of an opted-in pickle file; refusals name the file and the reason.

    Files of the zip format are memory-mapped; the legacy (pre-1.6) format cannot be, so it is read whole.
    """
    import pickle
    import zipfile

    import torch

    try:
        return torch.load(str(path), map_location=device, weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        text = _ANSI.sub("", str(exc))
        found = _UNSAFE_GLOBAL.search(text)
        what = f"it calls {found.group(1)}" if found else "it holds objects other than tensors"
        raise CheckpointError(
            f"refused to load pickle weight file {path}: {what} when unpickled, which can run arbitrary code, so "
            "it is not a plain state dict. Use the safetensors weights of this checkpoint, or convert the file "
            "to safetensors only if you trust where it comes from."
        ) from None


def parse_size(size: int | str) -> int:
    """``"10GB"`` -> 10_000_000_000, ``"5GiB"`` -> 5 * 2**30, ints unchanged (huggingface_hub rules)."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B)\s*", size.upper())
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size like '10GB', '500MB' or an int of bytes")
    value, unit = float(match.group(1)), match.group(2)
    powers = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    powers |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
    return int(value * powers[unit])


def write_state_dict(
    state: dict[str, torch.Tensor],
    folder: Path,
    base: str,
    *,
    safe_serialization: bool = True,
    variant: str | None = None,
    max_shard_size: int | str = "10GB",
) -> list[Path]:
    """Write ``state`` into ``folder`` as one file or as shards plus an index file."""
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards
    from safetensors.torch import save_file

    ext = SAFETENSORS if safe_serialization else PICKLE
    pattern = with_variant(f"{base}{{suffix}}.{ext}", variant)
    # Shared storage (tied weights) cannot be saved by safetensors: give each tensor its own.
    seen: set[int] = set()
    tensors: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        tensor = tensor.detach()
        ptr = tensor.untyped_storage().data_ptr() if tensor.device.type != "meta" else id(tensor)
        if ptr in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(ptr)
        tensors[key] = tensor
    split = split_torch_state_dict_into_shards(
        tensors, filename_pattern=pattern, max_shard_size=parse_size(max_shard_size)
    )
    written = []
    for filename, keys in split.filename_to_tensors.items():
        shard = {k: tensors[k] for k in keys}
        path = folder / filename
        try:
            if safe_serialization:
                save_file(shard, str(path), metadata={"format": "pt"})
            else:
                torch.save(shard, str(path))
        except OSError as exc:
            raise write_error(path, exc) from None
        written.append(path)
    if split.is_sharded:
        index = {"metadata": {**split.metadata}, "weight_map": split.tensor_to_filename}
        path = folder / index_name(base, ext, variant)
        try:
            path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        except OSError as exc:
            raise write_error(path, exc) from None
        written.append(path)
    return written


def checkpoint_dtype(files: list[Path]) -> Any:
    """The floating dtype stored in the first weight file (for ``torch_dtype="auto"``)."""
    import torch

    state = read_state_dict(files[:1], device="meta") if files[0].suffix != ".safetensors" else None
    if state is None:
        from safetensors import safe_open

        with safe_open(str(files[0]), framework="pt") as fh:
            for key in fh.keys():
                sl = fh.get_slice(key)
                dtype = getattr(torch, _SAFETENSORS_DTYPES.get(sl.get_dtype(), "float32"))
                if dtype.is_floating_point:
                    return dtype
        return torch.float32
    for tensor in state.values():
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.float32


_SAFETENSORS_DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}

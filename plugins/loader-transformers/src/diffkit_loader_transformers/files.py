"""Which files of a transformers component folder are read: its configs and vocabularies, and the
weight files of one format and variant. Pure Python (no torch, no transformers), so the Hub
download can ask before anything heavy is imported.
"""

from __future__ import annotations

import re
from pathlib import Path

from diffkit.errors import CheckpointError
from diffkit.weights import PICKLE, SAFETENSORS, select_weight_files, with_variant

#: transformers' weight file stems per format
WEIGHTS_BASE = {SAFETENSORS: "model", PICKLE: "pytorch_model"}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".msgpack", ".h5", ".onnx", ".onnx_data", ".pb", ".ot", ".pt", ".pth",
                    ".ckpt", ".gguf")
_WEIGHT_INDEX = re.compile(r"\.(safetensors|bin|msgpack|h5)\.index(\.[\w-]+)?\.json$")


def is_weight_file(name: str) -> bool:
    """Whether ``name`` holds weights (in any format) or indexes weight shards."""
    return name.endswith(_WEIGHT_SUFFIXES) or bool(_WEIGHT_INDEX.search(name))


def weight_formats(use_safetensors: bool | None, allow_pickle: bool) -> list[str]:
    """Formats tried in order: safetensors unless refused; pickle only on the opt-in."""
    formats = [SAFETENSORS] if use_safetensors is not False else []
    if use_safetensors is not True and allow_pickle:
        formats.append(PICKLE)
    return formats


def has_variant(names: set[str] | list[str], variant: str) -> bool:
    return any(is_weight_file(n) and (variant in n.split(".")[1:-1] or f".{variant}-" in n) for n in names)


def weight_files_needed(
    names: set[str], variant: str | None, use_safetensors: bool | None, allow_pickle: bool
) -> list[str]:
    """From a folder's file names, the weight files to read (index plus shards, or one file); [] if none fit."""
    for fmt in weight_formats(use_safetensors, allow_pickle):
        chosen = select_weight_files(set(names), WEIGHTS_BASE[fmt], variant, fmt == SAFETENSORS, fmt == PICKLE)
        if chosen:
            return chosen
    return []


def files_needed(names: set[str], variant: str | None, use_safetensors: bool | None, allow_pickle: bool) -> list[str]:
    """Every non-weight file (configs, vocabularies) plus the chosen weight files.

    A variant the folder does not have falls back to the default weights, as loading does.
    """
    if variant and not has_variant(names, variant):
        variant = None
    kept = sorted(n for n in names if not is_weight_file(n))
    return kept + weight_files_needed(set(names), variant, use_safetensors, allow_pickle)


def model_weight_format(folder: Path, variant: str | None, use_safetensors: bool | None, allow_pickle: bool) -> str:
    """The format (``safetensors`` or ``bin``) to load ``folder``'s model from; one clear error if none fits.

    Checked before transformers sees the folder, so that it can never fall back to a pickle
    file the caller did not opt in to.
    """
    if not folder.is_dir():
        raise CheckpointError(f"component folder {folder} does not exist")
    names = {p.name for p in folder.iterdir() if p.is_file()}
    for fmt in weight_formats(use_safetensors, allow_pickle):
        if select_weight_files(names, WEIGHTS_BASE[fmt], variant, fmt == SAFETENSORS, fmt == PICKLE):
            return fmt
    wanted = with_variant(f"{WEIGHTS_BASE[SAFETENSORS]}.{SAFETENSORS}", variant)
    pickles = sorted(n for n in names if n.endswith(".bin") or ".bin." in n)
    if pickles and PICKLE not in weight_formats(use_safetensors, allow_pickle):
        raise CheckpointError(
            f"{folder} holds only pickle weights ({', '.join(pickles)}), no {wanted}. Pickle files can run code "
            "when loaded; to load them anyway pass use_safetensors=False, allow_pickle=True."
        )
    if use_safetensors is False and not allow_pickle:
        raise CheckpointError(
            f"use_safetensors=False for {folder} needs allow_pickle=True (pickle is the only other format)"
        )
    found = sorted(n for n in names if is_weight_file(n))
    hint = f" (weight files there: {', '.join(found)})" if found else ""
    raise CheckpointError(f"no weight file {wanted} in {folder}{hint}")

"""Checkpoint files read without torch or pydantic: JSON objects and ``model_index.json``.

The loader and the CLI share these rules, so ``diffkit info`` judges a checkpoint exactly as
``from_pretrained`` would.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._fs import write_error
from .errors import CheckpointError

MODEL_INDEX = "model_index.json"
#: libraries whose classes diffkit plugins provide under the same names; diffusers writes
#: "deprecated" for the classes it keeps in its ``deprecated`` subpackages (e.g. KarrasVeScheduler)
NATIVE_LIBRARIES = ("diffusers", "diffkit", "deprecated")


def read_json(path: str | os.PathLike[str], what: str = "config file") -> dict[str, Any]:
    """Read a JSON object from ``path``; any problem names the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} cannot be read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"{what} {path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{what} {path} is not a config file: its JSON is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object, found {type(data).__name__}")
    return data


def write_json(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as diffusers does (sorted keys, indent 2, trailing newline), atomically."""
    path = Path(path)
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise write_error(path, exc) from None
        raise


class ComponentEntry(NamedTuple):
    """``[library, ClassName]`` of one ``model_index.json`` entry; both ``None`` when absent."""

    library: str | None
    class_name: str | None


def _identifier(value: Any) -> bool:
    return isinstance(value, str) and value.isidentifier()


def _dotted(value: Any) -> bool:
    return isinstance(value, str) and all(part.isidentifier() for part in value.split("."))


def parse_model_index(
    data: Mapping[str, Any], source: Path | str
) -> tuple[str | list[str], dict[str, ComponentEntry], dict[str, Any]]:
    """Split a ``model_index.json`` into (``_class_name``, components, pipeline settings), validated.

    Keys are plain identifiers (so no path escapes a checkpoint folder); a 2-list is a component,
    ``[library, ClassName]`` or ``[null, null]``; anything else is a pipeline setting.
    ``_class_name`` is a class name, or ``[module, ClassName]`` for code inside the checkpoint.
    """
    class_name = data.get("_class_name")
    if isinstance(class_name, list):
        if not (len(class_name) == 2 and _dotted(class_name[0]) and _identifier(class_name[1])):
            raise CheckpointError(f"{source}: '_class_name' must be a class name or [module, ClassName], found {class_name!r}")
    elif class_name is None:
        raise CheckpointError(f"{source}: '_class_name' is missing: it does not say which pipeline it is")
    elif not _identifier(class_name):
        raise CheckpointError(f"{source}: '_class_name' must be a class name, found {class_name!r}")
    components: dict[str, ComponentEntry] = {}
    settings: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if not _identifier(key):
            raise CheckpointError(
                f"{source}: component name {key!r} is not a plain identifier (no '/', '.', '..' or spaces allowed)"
            )
        if not (isinstance(value, list) and len(value) == 2):
            settings[key] = value
            continue
        library, cls = value
        if library is None and cls is None:
            components[key] = ComponentEntry(None, None)
        elif _dotted(library) and _identifier(cls):
            components[key] = ComponentEntry(library, cls)
        else:
            raise CheckpointError(f"{source}: entry {key!r} must be [library, ClassName] or [null, null], found {value!r}")
    return class_name, components, settings

"""The one gate through which code that no installed package provides is run.

Sources of such code: a ``custom_pipeline`` naming a local ``.py`` file or folder, or a Hub
repo holding ``pipeline.py``; a ``model_index.json`` whose ``_class_name`` is
``["module", "Class"]``; a component whose library is a ``.py`` file of the checkpoint. All of
them reach :func:`run_remote_module`, the only place in diffkit that executes such a file.

Rules, checked in this order every time:

1. ``DIFFKIT_DISABLE_REMOTE_CODE`` set (to anything but ``0``/``false``/``no``/``off``) refuses.
2. Otherwise the code runs only if ``trust_remote_code=True``: code found inside a checkpoint,
   fetched from the Hub, or in a local file named by ``custom_pipeline`` is never trusted by
   default (diffusers refuses a ``custom_pipeline`` file without it too).

The file is read once; its sha256 is computed from those bytes and exactly those bytes are
compiled and executed, so what was judged and logged is what runs. Relative imports are not
supported (a remote file is not part of a package): the error says to put the code in one
file or publish a package.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from ._env import env_flag
from .errors import RemoteCodeError

logger = logging.getLogger("diffkit.remote_code")

#: set to ``1`` to refuse every piece of code that no installed package provides
DISABLE_ENV = "DIFFKIT_DISABLE_REMOTE_CODE"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_lock = threading.RLock()
#: modules already executed in this process, by (sha256, stem): the same bytes are not run twice
_loaded: dict[tuple[str, str], ModuleType] = {}


def remote_code_disabled() -> bool:
    """Whether ``DIFFKIT_DISABLE_REMOTE_CODE`` forbids remote code (any value but 0/false/no/off)."""
    return env_flag(DISABLE_ENV, default=False, invalid=True)


def is_commit(revision: str | None) -> bool:
    """Whether ``revision`` is a full 40-hex commit hash (the only revision that cannot move)."""
    return bool(revision and _COMMIT.match(revision))


@dataclass(frozen=True)
class CodeSource:
    """Where a code file comes from: a local path, or a file of a Hub repo at a revision.

    ``path`` is the local file that would run; for a Hub file it is ``None`` until downloaded.
    """

    path: Path | None
    repo_id: str | None = None
    filename: str | None = None
    revision: str | None = None  # as the caller asked for it (None: the default branch)
    commit: str | None = None  # the commit the file comes from, once known
    named_by_caller: bool = False  # a local file named in custom_pipeline (for messages only: it gives no trust)

    @classmethod
    def local(cls, path: str | os.PathLike[str], *, named_by_caller: bool = False) -> CodeSource:
        return cls(path=Path(path), named_by_caller=named_by_caller)

    @classmethod
    def hub(cls, repo_id: str, filename: str, revision: str | None, commit: str | None = None,
            path: Path | None = None) -> CodeSource:
        return cls(path=path, repo_id=repo_id, filename=filename, revision=revision, commit=commit)

    @property
    def from_hub(self) -> bool:
        return self.repo_id is not None

    def describe(self) -> str:
        """``pipeline.py of Hub repo 'org/name' (revision 'main', commit abc…)`` or the local path."""
        if self.repo_id is None:
            return str(self.path)
        where = f"revision {self.revision or 'main'!r}"
        if self.commit and self.commit != self.revision:
            where += f", commit {self.commit}"
        return f"{self.filename} of Hub repo {self.repo_id!r} ({where})"


def check_remote_code(source: CodeSource, *, trust_remote_code: bool) -> None:
    """Raise :class:`RemoteCodeError` unless the gate's rules let ``source`` run.

    Called by :func:`run_remote_module` before anything is read, and by the loader before a
    Hub file is even downloaded, so that refused code never reaches the disk.
    """
    what = source.describe()
    if remote_code_disabled():
        raise RemoteCodeError(
            f"refusing to run {what}: {DISABLE_ENV}={os.environ.get(DISABLE_ENV)!r} forbids code that no installed "
            f"package provides, even with trust_remote_code=True. Unset {DISABLE_ENV} to allow it, or install the "
            "pipeline as a package (see docs/community-pipelines.md)."
        )
    if trust_remote_code is True:  # a truthy string such as "false" is no consent
        return
    if source.from_hub:
        origin = "fetched from the Hub"
    elif source.named_by_caller:
        origin = "in a local file named by custom_pipeline"
    else:
        origin = "found inside the checkpoint"
    pin = " with revision= pinned to a commit hash" if source.from_hub else ""
    raise RemoteCodeError(
        f"refusing to run {what}: it is code {origin} that no installed package provides, and "
        f"trust_remote_code is not set. Read the file; if you trust it, pass trust_remote_code=True{pin}, or "
        "install the pipeline as a package instead (see docs/community-pipelines.md)."
    )


def run_remote_module(source: CodeSource, *, trust_remote_code: bool) -> ModuleType:
    """Judge ``source`` by the gate's rules, then execute its file as a fresh module and return it.

    Syntax errors, relative imports and errors raised while the module runs give
    :class:`RemoteCodeError` naming the file. The same bytes are executed once per process.
    """
    with _lock:
        check_remote_code(source, trust_remote_code=trust_remote_code)
        if source.path is None:
            raise ValueError(f"{source.describe()} has not been downloaded")
        path = source.path
        what = source.describe()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise RemoteCodeError(f"cannot read {what}: {exc}") from None
        sha256 = hashlib.sha256(data).hexdigest()
        if source.from_hub and not is_commit(source.revision):
            logger.warning(
                "trusting %s, which is not pinned to a commit: the code may change under you at the next "
                "download. Pin it with revision=%r (or custom_revision= for custom_pipeline).",
                what, source.commit or "<commit hash>",
            )
        logger.warning("running remote code %s (sha256 %s)", what, sha256)
        stem = _module_stem(path)
        cached = _loaded.get((sha256, stem))
        if cached is not None:
            return cached
        module = _execute(data, path, what, f"diffkit_remote_{stem}_{sha256[:16]}", sha256)
        _loaded[(sha256, stem)] = module
        return module


def _execute(data: bytes, path: Path, what: str, module_name: str, sha256: str) -> ModuleType:
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as exc:
        raise RemoteCodeError(f"{what} is not valid Python: {exc.msg} (line {exc.lineno})") from None
    except ValueError as exc:  # e.g. null bytes
        raise RemoteCodeError(f"{what} is not valid Python: {exc}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level > 0:
            raise RemoteCodeError(
                f"{what} uses a relative import (line {node.lineno}); remote code is a single file, not a package: "
                "put the code in one file, import installed packages only, or publish it as a package"
            )
    code = compile(tree, str(path), "exec", dont_inherit=True)
    module = ModuleType(module_name)
    module.__file__ = str(path)
    module.__dict__["__diffkit_sha256__"] = sha256
    # Registered while it runs, as importlib does (dataclasses and pydantic look the module up);
    # removed again if it fails, so no half-run module stays behind.
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)  # noqa: S102 - this is the gate; the checks above have passed
    except BaseException as exc:
        sys.modules.pop(module_name, None)
        if not isinstance(exc, Exception):
            raise
        hint = " (remote code can import installed packages only)" if isinstance(exc, ImportError) else ""
        raise RemoteCodeError(f"running {what} failed: {type(exc).__name__}: {exc}{hint}") from exc
    return module


def code_file_of(cls: type) -> tuple[str, Path] | None:
    """For a class that remote code defined: ``(module name to write, its source file)``; else ``None``.

    ``save_pretrained`` uses it to copy the file beside what it writes and to name it as
    ``model_index.json`` does (``["module", "Class"]``), so the saved checkpoint loads again
    through this gate.
    """
    module = sys.modules.get(cls.__module__)
    if module is None or "__diffkit_sha256__" not in module.__dict__ or not module.__file__:
        return None
    path = Path(module.__file__)
    return _module_stem(path), path


def _module_stem(path: Path) -> str:
    """A code file's name as a module name: ``my-pipe.py`` → ``my_pipe``."""
    return re.sub(r"\W", "_", path.stem) or "module"


def pick_class(module: ModuleType, base: type | tuple[type, ...], *, what: str, class_name: str | None = None) -> type:
    """The class to use from a remote module: ``class_name`` if given, else the one ``base`` subclass it defines.

    Classes imported into the module from elsewhere do not count. None or several candidates
    give :class:`RemoteCodeError` naming the file and the candidates.
    """
    bases = base if isinstance(base, tuple) else (base,)
    kinds = " or ".join(b.__name__ for b in bases)
    if class_name is not None:
        found = module.__dict__.get(class_name)
        if not isinstance(found, type):
            defined = _names(_defined_classes(module, bases))
            raise RemoteCodeError(
                f"{what} defines no class {class_name!r} (its {kinds} classes: {defined or 'none'})"
            )
        if not issubclass(found, bases) or found in bases:
            raise RemoteCodeError(f"{class_name} in {what} is not a subclass of {kinds}")
        return found
    candidates = _defined_classes(module, bases)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise RemoteCodeError(f"{what} defines no subclass of {kinds}")
    raise RemoteCodeError(
        f"{what} defines several {kinds} subclasses ({_names(candidates)}); it must define exactly one"
    )


def _defined_classes(module: ModuleType, bases: tuple[type, ...]) -> list[type]:
    return [
        obj for obj in module.__dict__.values()
        if isinstance(obj, type) and issubclass(obj, bases) and obj not in bases and obj.__module__ == module.__name__
    ]


def _names(classes: Iterable[type]) -> str:
    return ", ".join(sorted(c.__name__ for c in classes))


__all__ = ["CodeSource", "DISABLE_ENV", "check_remote_code", "code_file_of", "is_commit", "pick_class", "remote_code_disabled",
           "run_remote_module"]

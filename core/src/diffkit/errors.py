"""Exceptions raised by diffkit.

Every error names what was wrong (file, argument, component) and what to do about it.
This module imports nothing heavy so that error paths stay fast.
"""

from __future__ import annotations


class DiffkitError(Exception):
    """Base class of the errors diffkit raises on purpose."""


class ComponentNotFoundError(DiffkitError, LookupError):
    """No installed plugin provides a name of a given kind.

    ``kind`` and ``name`` say what was looked up; ``suggested_packages`` lists the
    distributions that ``registry.toml`` says provide it; ``load_errors`` holds the load
    errors of installed distributions that might have provided it.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        name: str,
        candidates: list[str] | None = None,
        suggested_packages: list[str] | None = None,
        load_errors: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.candidates = candidates or []
        self.suggested_packages = suggested_packages or []
        self.load_errors = load_errors or {}

    def __str__(self) -> str:  # LookupError would quote the message like a KeyError
        return self.args[0]


class PluginError(DiffkitError):
    """A plugin distribution failed to load or registered something invalid."""


class DuplicateNameError(PluginError):
    """Two distributions registered the same name for the same kind."""


class ConfigError(DiffkitError, ValueError):
    """A configuration (file or dict) holds a value that is not allowed."""


class CheckpointError(DiffkitError, ValueError):
    """A checkpoint folder or file is malformed, incomplete or inconsistent."""


class MissingFileError(CheckpointError, OSError):
    """A file the checkpoint needs (weights, a shard, a config) is not there.

    Also an ``OSError``, which diffusers raises in this case, so ``except OSError`` written for
    diffusers catches it.
    """


class RemoteCodeError(DiffkitError, PermissionError):
    """Code that does not come from an installed package was refused or failed to load."""

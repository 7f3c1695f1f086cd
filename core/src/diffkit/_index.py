"""``registry.toml``: the offline index of known plugin packages, read only to build errors
and ``diffkit list --available``."""

from __future__ import annotations

import difflib
import os
import sys
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from ._registry import INDEX_KEYS, KINDS, normalize_dist
from .errors import ComponentNotFoundError

if TYPE_CHECKING:
    from ._registry import Registry

INDEX_FILE = Path(__file__).with_name("registry.toml")


@dataclass(frozen=True)
class IndexedPackage:
    dist: str
    description: str
    first_party: bool
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)


def index_path() -> Path:
    return Path(os.environ.get("DIFFKIT_REGISTRY_INDEX", INDEX_FILE))


@lru_cache(maxsize=4)
def _read_index(path: Path) -> dict[str, IndexedPackage]:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    packages: dict[str, IndexedPackage] = {}
    for dist, body in raw.get("packages", {}).items():
        provides = {kind: tuple(body.get(key, ())) for kind, key in INDEX_KEYS.items()}
        packages[normalize_dist(dist)] = IndexedPackage(
            dist=normalize_dist(dist),
            description=body.get("description", ""),
            first_party=bool(body.get("path")),
            provides={k: v for k, v in provides.items() if v},
        )
    return packages


def read_index() -> dict[str, IndexedPackage]:
    return _read_index(index_path())


def packages_providing(kind: str, name: str) -> list[str]:
    return sorted(p.dist for p in read_index().values() if name in p.provides.get(kind, ()))


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def pip_command(dist: str, upgrade: bool = False) -> str:
    return f"{sys.executable} -m pip install {'-U ' if upgrade else ''}{dist}"


def close_names(name: str, known: list[str], n: int = 3) -> list[str]:
    """Names of ``known`` that ``name`` was probably meant to be: same letters in another case first,
    then the closest spellings ignoring case (``ddimscheduler`` -> ``DDIMScheduler``)."""
    by_lower: dict[str, list[str]] = {}
    for candidate in known:
        by_lower.setdefault(candidate.lower(), []).append(candidate)
    found = [c for c in by_lower.get(name.lower(), []) if c != name]
    for lower in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.75):
        found += [c for c in by_lower[lower] if c not in found and c != name]
    return found[:n]


def not_found_error(registry: Registry, kind: str, name: str, context: str = "") -> ComponentNotFoundError:
    """The error for a name that no installed (and loaded) plugin provides."""
    where = f" ({context})" if context else ""
    installed = registry.names(kind)
    plural = KINDS[kind].removeprefix("register_")
    providers = packages_providing(kind, name)
    load_errors = {p.dist: p.error or "" for p in registry.plugins() if p.status != "loaded"}
    lines: list[str] = []
    if providers:
        for dist in providers:
            info = registry.plugin(dist)
            if info is not None and info.status == "failed":
                lines.append(f"{dist} is installed but failed to load: {info.error}")
                lines.append(f"Fix or reinstall it: {pip_command(dist, upgrade=True)}")
            elif info is not None and info.status == "disabled":
                lines.append(f"{dist} is installed but {info.error}; allow it to use {name!r}.")
            elif info is not None or installed_version(dist) is not None:
                version = info.version if info is not None else installed_version(dist)
                lines.append(
                    f"{dist} {version} is installed but does not provide it; upgrade it with: "
                    f"{pip_command(dist, upgrade=True)}"
                )
            else:
                lines.append(f"It is provided by {dist!r}. Install it into this environment with:")
                lines.append(f"    {pip_command(dist)}")
    message = f"No installed plugin provides {kind} {name!r}{where}."
    if lines:
        message += "\n" + "\n".join(lines)
    else:
        close = close_names(name, installed)
        if close:
            message += f" Did you mean {' or '.join(repr(c) for c in close)}?"
        message += f"\nInstalled {plural}: {', '.join(installed) if installed else '(none)'}"
        failed = [p for p in registry.plugins() if p.status == "failed"]
        if failed:
            message += "\nPlugins that failed to load: " + "; ".join(f"{p.dist}: {p.error}" for p in failed)
    return ComponentNotFoundError(
        message,
        kind=kind,
        name=name,
        candidates=close_names(name, installed),
        suggested_packages=providers,
        load_errors=load_errors,
    )


def diffusers_module_entry(library: str | None, class_name: str | None, *, installed_only: bool) -> bool:
    """Whether ``[library, ClassName]`` names a class of one of diffusers' pipeline modules.

    diffusers files some components under the pipeline module that defines them, e.g.
    ``["stable_diffusion", "StableDiffusionSafetyChecker"]``: a lowercase module name that is no
    component loader's library, for a class that an installed plugin registers (or, with
    ``installed_only=False``, that a package of ``registry.toml`` provides). Such classes resolve
    through the registry by name; the module itself is never imported.
    """
    from ._registry import registry

    if not (isinstance(library, str) and library.isidentifier() and library == library.lower()
            and isinstance(class_name, str)):
        return False
    if registry.has("component_loader", library) or packages_providing("component_loader", library):
        return False
    kinds = ("model", "scheduler", "processor")
    if any(registry.has(kind, class_name) for kind in kinds):
        return True
    return not installed_only and any(packages_providing(kind, class_name) for kind in kinds)

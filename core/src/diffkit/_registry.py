"""The plugin registry: which installed distribution provides which name.

Built lazily on first use (never at ``import diffkit``). Each plugin distribution declares
one entry point in the group ``diffkit``; its hook module registers ``"module:Attr"``
strings through a ``register`` callback. Resolving a name imports exactly the module that
defines it. One broken plugin never breaks the others: its error (an exception at import,
``sys.exit()`` included, a raising hook, a name that a first-party plugin already provides) is
recorded on its :class:`PluginInfo`, shown by ``diffkit plugins``, and raised only under
``DIFFKIT_STRICT_PLUGINS=1``.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs
from ._env import env_flag
from .errors import DuplicateNameError, PluginError

logger = logging.getLogger("diffkit.plugins")
#: what a plugin may raise without taking the process down: ``sys.exit()`` in a hook module is a plugin bug
_PLUGIN_FAILURES = (Exception, SystemExit)

#: kind -> the hook that registers names of that kind
KINDS: dict[str, str] = {
    "pipeline": "register_pipelines",
    "model": "register_models",
    "scheduler": "register_schedulers",
    "processor": "register_processors",
    "attention_backend": "register_attention_backends",
    "offload_strategy": "register_offload_strategies",
    "step_cache": "register_step_caches",
    "component_loader": "register_component_loaders",
    "pretrained": "register_pretrained",
}
#: kind -> its key in registry.toml
INDEX_KEYS: dict[str, str] = {kind: hook.removeprefix("register_") for kind, hook in KINDS.items()}

ENTRY_POINT_GROUP = "diffkit"
_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def normalize_dist(name: str) -> str:
    """PEP 503 normalisation, so ``Diffkit_Models.UNet`` and ``diffkit-models-unet`` match."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _env_list(var: str) -> set[str] | None:
    """The distribution names of a comma-separated list variable, spaces stripped; ``None`` when unset."""
    value = os.environ.get(var)
    if value is None:
        return None
    return {normalize_dist(item.strip()) for item in value.split(",") if item.strip()}


def _match_names(var: str, names: set[str] | None, installed: set[str]) -> set[str] | None:
    """``names`` with ``models-unet`` read as ``diffkit-models-unet``; names that match nothing warn."""
    if names is None:
        return None
    matched = set()
    for name in sorted(names):
        if name in installed:
            matched.add(name)
        elif f"diffkit-{name}" in installed:
            matched.add(f"diffkit-{name}")
        else:
            close = difflib.get_close_matches(name, sorted(installed), n=1)
            listed = ", ".join(sorted(installed)) or "none"
            hint = f"; did you mean {close[0]!r}?" if close else f" (installed: {listed})"
            logger.warning("%s names %r, which is not an installed plugin distribution%s", var, name, hint)
    return matched


def strict_plugins() -> bool:
    """``DIFFKIT_STRICT_PLUGINS``: plugin errors become exceptions (on/off values as every switch)."""
    return env_flag("DIFFKIT_STRICT_PLUGINS", default=False)


@dataclass(frozen=True)
class Entry:
    """One registered name: where it lives and who provides it."""

    kind: str
    name: str
    target: Any  # "module:Attr" or, for in-process test plugins, the object itself
    dist: str
    version: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def module(self) -> str | None:
        return self.target.split(":", 1)[0] if isinstance(self.target, str) else None


@dataclass
class PluginInfo:
    """A plugin distribution as the registry saw it."""

    dist: str
    version: str | None
    hook_module: str
    status: str = "loaded"  # loaded | failed | disabled
    error: str | None = None
    provides: dict[str, list[str]] = field(default_factory=dict)
    #: what went wrong after it loaded (a raising hook, a name it may not take); it keeps working otherwise
    problems: list[str] = field(default_factory=list)

    def add_problem(self, message: str) -> bool:
        """Record ``message`` once; whether it is new."""
        if message in self.problems:
            return False
        self.problems.append(message)
        return True


@dataclass
class _State:
    pm: pluggy.PluginManager
    plugins: dict[str, PluginInfo]
    entries: dict[str, dict[str, Entry]] | None = None
    conflicts: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)


def _new_plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("diffkit")
    pm.add_hookspecs(hookspecs)
    return pm


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Registry:
    """Names of every kind, as provided by the installed plugin distributions."""

    def __init__(self, *, autoload: bool = True) -> None:
        self._autoload = autoload
        self._state: _State | None = None
        self._lock = threading.RLock()

    # -- building ---------------------------------------------------------------------
    def _ensure(self) -> _State:
        with self._lock:
            if self._state is None:
                state = _State(pm=_new_plugin_manager(), plugins={})
                if self._autoload:
                    self._load_entry_points(state)
                self._state = state
            if self._state.entries is None:
                self._collect(self._state)
            return self._state

    def _load_entry_points(self, state: _State) -> None:
        from importlib.metadata import entry_points

        found = []
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.value):
            meta = ep.dist.metadata if ep.dist else None  # parsed once: .name and .version would parse it twice
            dist_name = normalize_dist(meta["Name"] if meta else ep.name)
            version = meta["Version"] if meta else None
            if dist_name in state.plugins:  # the same distribution seen twice on sys.path
                continue
            info = PluginInfo(dist=dist_name, version=version, hook_module=ep.value)
            state.plugins[dist_name] = info
            found.append((ep, info))
        installed = set(state.plugins)
        allow = _match_names("DIFFKIT_LOAD_PLUGINS", _env_list("DIFFKIT_LOAD_PLUGINS"), installed)
        deny = _match_names("DIFFKIT_DISABLE_PLUGINS", _env_list("DIFFKIT_DISABLE_PLUGINS"), installed) or set()
        for ep, info in found:
            dist_name = info.dist
            if (allow is not None and dist_name not in allow) or dist_name in deny:
                info.status = "disabled"
                var = "DIFFKIT_DISABLE_PLUGINS" if dist_name in deny else "DIFFKIT_LOAD_PLUGINS"
                info.error = f"disabled by {var}={os.environ.get(var, '')!r}"
                continue
            try:
                module = ep.load()
            except _PLUGIN_FAILURES as exc:  # a broken plugin must not break the others
                self._fail(info, f"import of {ep.value!r} failed: {_describe(exc)}", exc)
                continue
            self._add_to_pm(state, module, info)

    def _add_to_pm(self, state: _State, plugin: object, info: PluginInfo) -> None:
        try:
            state.pm.register(plugin, name=info.dist)
        except Exception as exc:
            self._fail(info, f"invalid hook implementation: {_describe(exc)}", exc)
            return
        unknown = [
            caller.name for caller in state.pm.get_hookcallers(plugin) or [] if not caller.has_spec()
        ]
        if unknown:
            state.pm.unregister(plugin)
            known = sorted(KINDS.values()) + ["pipeline_loaded"]
            hints = []
            for hook in unknown:
                close = difflib.get_close_matches(hook, known, n=1)
                hints.append(f"{hook!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            self._fail(info, "implements unknown hook(s): " + ", ".join(hints), None)

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None) -> None:
        info.status = "failed"
        info.error = message
        if strict_plugins():
            raise PluginError(
                f"plugin {info.dist!r} failed to load: {message} "
                "(DIFFKIT_STRICT_PLUGINS=1 turns plugin errors into exceptions)"
            ) from exc

    def _collect(self, state: _State) -> None:
        entries: dict[str, dict[str, Entry]] = {kind: {} for kind in KINDS}
        conflicts: dict[tuple[str, str], list[Entry]] = {}
        for plugin in sorted(state.pm.get_plugins(), key=lambda p: state.pm.get_name(p) or ""):
            dist = state.pm.get_name(plugin) or ""
            info = state.plugins.get(dist)
            if info is None or info.status != "loaded":
                continue
            found = self._registrations_of(state.pm, plugin, info)
            if found is None:
                continue
            info.provides = {}
            for entry in found:
                info.provides.setdefault(entry.kind, []).append(entry.name)
                existing = entries[entry.kind].get(entry.name)
                if existing is None or entry.meta.get("replaces") == existing.dist:
                    entries[entry.kind][entry.name] = entry
                elif existing.meta.get("replaces") == entry.dist:
                    continue
                else:
                    conflicts.setdefault((entry.kind, entry.name), [existing]).append(entry)
        for (kind, name), clash in list(conflicts.items()):
            entries[kind].pop(name, None)
            if strict_plugins():
                raise _duplicate_error(kind, name, clash)
            first = [e for e in clash if _first_party(e.dist)]
            if len(first) == 1:  # a first-party name cannot be knocked out by a third-party package
                entries[kind][name] = first[0]
                del conflicts[(kind, name)]
                for other in clash:
                    if other is not first[0] and other.dist in state.plugins:
                        state.plugins[other.dist].add_problem(
                            f"registers {kind} {name!r}, which first-party {first[0].dist} provides: ignored. "
                            f"To use this one, disable {first[0].dist} with DIFFKIT_DISABLE_PLUGINS"
                        )
        state.entries = entries
        state.conflicts = conflicts

    def notify_pipeline_loaded(self, pipeline: Any, source: str) -> None:
        """Call every ``pipeline_loaded`` hook; one that raises is recorded (strict mode: raised), not fatal."""
        state = self._ensure()
        arguments = {"pipeline": pipeline, "source": source}
        for impl in reversed(state.pm.hook.pipeline_loaded.get_hookimpls()):
            try:
                impl.function(*[arguments[name] for name in impl.argnames])
            except _PLUGIN_FAILURES as exc:
                message = f"its pipeline_loaded hook raised {_describe(exc)}"
                if strict_plugins():
                    raise PluginError(
                        f"plugin {impl.plugin_name!r}: {message} (DIFFKIT_STRICT_PLUGINS=1 turns plugin errors into "
                        "exceptions)"
                    ) from exc
                info = state.plugins.get(impl.plugin_name)
                if info is None or info.add_problem(message):
                    logger.warning("plugin %r: %s; ignored (see diffkit plugins)", impl.plugin_name, message)

    def _registrations_of(
        self, pm: pluggy.PluginManager, plugin: object, info: PluginInfo
    ) -> list[Entry] | None:
        found: list[Entry] = []
        for kind, hook_name in KINDS.items():
            hook_impl = getattr(plugin, hook_name, None)
            if hook_impl is None or pm.parse_hookimpl_opts(plugin, hook_name) is None:
                continue

            def register(name: str, target: Any, _kind: str = kind, **meta: Any) -> None:
                if not isinstance(name, str) or not name or name != name.strip():
                    raise PluginError(f"register({name!r}, ...): the name must be a non-empty string")
                if isinstance(target, str) and not _TARGET.match(target):
                    raise PluginError(
                        f"register({name!r}, {target!r}): the target must look like 'package.module:Attr'"
                    )
                if target is None:
                    raise PluginError(f"register({name!r}, None): the target is missing")
                if _kind == "pipeline":
                    hookspecs.PipelineRole.from_meta(name, info.dist, meta)
                found.append(Entry(_kind, name, target, info.dist, info.version, dict(meta)))

            try:
                hook_impl(register=register)
            except _PLUGIN_FAILURES as exc:
                self._fail(info, f"{hook_name} raised {_describe(exc)}", exc)
                return None
        return found

    # -- queries ----------------------------------------------------------------------
    def _check_kind(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; the kinds are: {', '.join(KINDS)}")

    def entry(self, kind: str, name: str, *, context: str = "") -> Entry:
        """The registration of ``name`` (without importing it); ``context`` enriches errors."""
        self._check_kind(kind)
        state = self._ensure()
        assert state.entries is not None
        found = state.entries[kind].get(name)
        if found is not None:
            return found
        if (kind, name) in state.conflicts:
            raise _duplicate_error(kind, name, state.conflicts[(kind, name)])
        from ._index import not_found_error

        raise not_found_error(self, kind, name, context)

    def get(self, kind: str, name: str, *, context: str = "") -> Any:
        """Resolve ``name`` of ``kind`` to its object, importing only the module defining it."""
        entry = self.entry(kind, name, context=context)
        return resolve_target(entry)

    def names(self, kind: str) -> list[str]:
        """Sorted names of one kind."""
        self._check_kind(kind)
        state = self._ensure()
        assert state.entries is not None
        return sorted(state.entries[kind])

    def entries(self, kind: str) -> list[Entry]:
        self._check_kind(kind)
        state = self._ensure()
        assert state.entries is not None
        return [state.entries[kind][name] for name in sorted(state.entries[kind])]

    def has(self, kind: str, name: str) -> bool:
        self._check_kind(kind)
        state = self._ensure()
        assert state.entries is not None
        return name in state.entries[kind]

    def plugins(self) -> list[PluginInfo]:
        """Every plugin distribution seen, loaded or not, sorted by name."""
        state = self._ensure()
        return [state.plugins[name] for name in sorted(state.plugins)]

    def plugin(self, dist: str) -> PluginInfo | None:
        return self._ensure().plugins.get(normalize_dist(dist))

    def conflicts(self) -> dict[tuple[str, str], list[Entry]]:
        return dict(self._ensure().conflicts)

    @property
    def hook(self) -> Any:
        """pluggy's hook relay, for notification hooks such as ``pipeline_loaded``."""
        return self._ensure().pm.hook

    # -- changing ---------------------------------------------------------------------
    def register_plugin(self, plugin: object, dist: str = "in-process-plugin", version: str | None = None) -> PluginInfo:
        """Register a hook module or object in-process (tests, notebooks)."""
        with self._lock:
            state = self._ensure()
            dist = normalize_dist(dist)
            if dist in state.plugins and state.plugins[dist].status == "loaded":
                raise PluginError(f"a plugin named {dist!r} is already registered")
            module_name = getattr(plugin, "__name__", type(plugin).__name__)
            info = PluginInfo(dist=dist, version=version, hook_module=str(module_name))
            state.plugins[dist] = info
            state.entries = None
            try:
                self._add_to_pm(state, plugin, info)
                self._collect(state)
            except BaseException:
                self.unregister_plugin(dist)
                raise
            return info

    def unregister_plugin(self, dist: str) -> None:
        with self._lock:
            state = self._state
            if state is None:
                return
            dist = normalize_dist(dist)
            plugin = state.pm.get_plugin(dist)
            if plugin is not None:
                state.pm.unregister(plugin)
            state.plugins.pop(dist, None)
            state.entries = None

    @contextlib.contextmanager
    def isolated(self, *, autoload: bool = False) -> Iterator[Registry]:
        """Swap in a fresh state for the duration of the block (the testing fixture uses this)."""
        with self._lock:
            saved = (self._state, self._autoload)
            self._state, self._autoload = None, autoload
        try:
            yield self
        finally:
            with self._lock:
                self._state, self._autoload = saved

    def reload(self) -> None:
        """Forget everything; the next query loads the entry points again."""
        with self._lock:
            self._state = None


def resolve_target(entry: Entry) -> Any:
    """Import the module of ``entry`` and walk to the attribute; errors name the plugin."""
    if not isinstance(entry.target, str):
        return entry.target
    module_name, _, attr_path = entry.target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except _PLUGIN_FAILURES as exc:
        raise PluginError(
            f"{entry.kind} {entry.name!r} from plugin {entry.dist!r}: importing {module_name!r} failed: "
            f"{_describe(exc)}"
        ) from exc
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(
                f"{entry.kind} {entry.name!r} from plugin {entry.dist!r}: {entry.target!r} does not exist "
                f"(module {module_name!r} has no attribute {part!r})"
            ) from None
    return obj


def _first_party(dist: str) -> bool:
    from ._index import read_index

    package = read_index().get(dist)
    return package is not None and package.first_party


def _duplicate_error(kind: str, name: str, clash: list[Entry]) -> DuplicateNameError:
    who = " and ".join(f"{e.dist} {e.version or ''}".strip() for e in clash)
    return DuplicateNameError(
        f"{kind} {name!r} is registered by more than one plugin: {who}. Uninstall one of them, "
        "disable one with DIFFKIT_DISABLE_PLUGINS, or have one declare replaces=<other distribution>."
    )


registry = Registry()


__all__ = [
    "KINDS",
    "Entry",
    "PluginInfo",
    "Registry",
    "registry",
    "resolve_target",
    "normalize_dist",
]

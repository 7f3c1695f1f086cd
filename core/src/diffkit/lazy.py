"""Lazy public names for plugin packages: ``from diffkit_scheduler_ddim import DDIMScheduler``.

A plugin package's ``__init__`` holds one line::

    __getattr__, __dir__ = lazy_exports(__name__)

and then exports, by class name, every class its hook module registers (the ``Attr`` of each
``"module:Attr"`` target), plus any ``extra`` names. Nothing is imported when the package is:
the hook module is read on the first attribute lookup, and a name imports only the module that
defines it (PEP 562), so plugin discovery stays as cheap as before.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import Any

#: kinds whose targets are classes worth exporting (``pretrained`` targets are checkpoint paths)
_CLASS_HOOKS = (
    "register_pipelines",
    "register_models",
    "register_schedulers",
    "register_processors",
    "register_attention_backends",
    "register_offload_strategies",
    "register_step_caches",
    "register_component_loaders",
)


def registered_exports(package: str, hooks: str = "hooks") -> dict[str, str]:
    """Export name -> ``"module:Attr"`` for every string target of ``package``'s hook module inside ``package``."""
    module = importlib.import_module(f"{package}.{hooks}")
    found: dict[str, str] = {}

    def register(name: str, target: Any, **meta: Any) -> None:
        if not isinstance(target, str) or ":" not in target:
            return
        module_name, _, attr = target.partition(":")
        if module_name.startswith(f"{package}.") and "." not in attr:
            found.setdefault(attr, target)

    for hook_name in _CLASS_HOOKS:
        hook = getattr(module, hook_name, None)
        if callable(hook):
            hook(register=register)
    return found


def lazy_exports(
    package: str, extra: Mapping[str, str] | None = None, hooks: str = "hooks"
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """PEP 562 ``__getattr__`` and ``__dir__`` for plugin package ``package``.

    ``extra`` maps further public names to the module defining each (``".outputs"`` is relative
    to ``package``). ``__all__`` is answered by ``__getattr__`` too, so ``import *`` works.
    """
    lock = threading.Lock()
    table: dict[str, str] = {}

    def exports() -> dict[str, str]:
        with lock:
            if not table:
                table.update(registered_exports(package, hooks))
                for name, module_name in (extra or {}).items():
                    absolute = package + module_name if module_name.startswith(".") else module_name
                    table[name] = f"{absolute}:{name}"
            return table

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            return sorted(exports())
        if name.startswith("__"):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = exports().get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, _, attr = target.partition(":")
        value = getattr(importlib.import_module(module_name), attr)
        setattr(importlib.import_module(package), name, value)  # later lookups skip this function
        return value

    def __dir__() -> list[str]:
        module = importlib.import_module(package)
        return sorted(set(vars(module)) | set(exports()))

    return __getattr__, __dir__

"""Test helpers for plugin authors: a pytest plugin and in-process plugin registration.

Enabled automatically when diffkit is installed (``pytest11`` entry point). Fixtures:

``diffkit_registry``
    the global registry with a fresh, empty state for one test (no installed plugins are
    loaded); register what the test needs with :func:`plugin`.

Context manager :func:`plugin` registers a hook module or object under a distribution name
and removes it afterwards, so a plugin is tested without being installed::

    with diffkit.testing.plugin(my_plugin.hooks, dist="diffkit-my-plugin"):
        assert registry.get("scheduler", "MyScheduler")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from ._registry import PluginInfo, Registry, registry


@contextlib.contextmanager
def plugin(obj: Any, dist: str = "in-process-plugin", version: str | None = None) -> Iterator[PluginInfo]:
    """Register ``obj`` (a hook module, class or instance) for the duration of the block."""
    info = registry.register_plugin(obj, dist=dist, version=version)
    try:
        yield info
    finally:
        registry.unregister_plugin(dist)


@pytest.fixture
def diffkit_registry() -> Iterator[Registry]:
    """The global registry with a fresh state that loads no installed plugin."""
    with registry.isolated(autoload=False) as fresh:
        yield fresh


@pytest.fixture
def diffkit_installed_registry() -> Iterator[Registry]:
    """The global registry with a fresh state that loads the installed plugins again."""
    with registry.isolated(autoload=True) as fresh:
        yield fresh

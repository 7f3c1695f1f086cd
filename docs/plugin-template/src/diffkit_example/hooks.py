"""Hook module of the plugin: the entry point ``[project.entry-points.diffkit]`` names it.

It must stay light. It imports only ``diffkit.hookspecs`` and registers *strings*
``"module:Attr"``: the module holding the class is imported only when someone resolves the
name (``registry.get("processor", "ExampleRescaleProcessor")`` or a ``model_index.json`` that
names it), so ``diffkit list`` and ``import diffkit`` never pay for torch or numpy.
"""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_processors(register: Register) -> None:
    """One ``register`` call per class; the name is the class name used in JSON files."""
    register("ExampleRescaleProcessor", "diffkit_example.rescale:ExampleRescaleProcessor")

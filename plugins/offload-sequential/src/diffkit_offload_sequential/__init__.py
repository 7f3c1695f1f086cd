"""diffkit plugin: the "sequential" offload strategy (weights stream per module)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

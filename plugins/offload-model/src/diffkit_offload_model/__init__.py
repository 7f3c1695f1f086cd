"""diffkit plugin: the "model" offload strategy (whole components move while they run)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

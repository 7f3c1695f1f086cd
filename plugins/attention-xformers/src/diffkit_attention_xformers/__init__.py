"""diffkit plugin: the xformers attention backend (CUDA only, optional)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

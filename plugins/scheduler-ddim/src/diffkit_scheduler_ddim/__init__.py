"""diffkit plugin: the DDIM scheduler and its inverse."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

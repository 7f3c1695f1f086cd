"""diffkit plugin: the LCM and TCD consistency schedulers."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

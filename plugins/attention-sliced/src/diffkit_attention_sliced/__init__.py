"""diffkit plugin: the sliced attention backend."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

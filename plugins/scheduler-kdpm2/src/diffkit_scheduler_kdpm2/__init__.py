"""diffkit plugin: the DPM-2 schedulers (KDPM2 and its ancestral variant)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

"""diffkit plugin: the DPM-Solver schedulers (multistep, single-step, inverse, SDE, EDM)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

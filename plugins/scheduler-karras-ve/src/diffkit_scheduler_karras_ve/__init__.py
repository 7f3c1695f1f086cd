"""diffkit plugin: the stochastic Karras et al. sampler for variance-exploding models."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

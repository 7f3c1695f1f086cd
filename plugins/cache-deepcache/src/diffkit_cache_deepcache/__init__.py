"""diffkit plugin: DeepCache, a step cache for UNet2DConditionModel (deep features reused between steps)."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

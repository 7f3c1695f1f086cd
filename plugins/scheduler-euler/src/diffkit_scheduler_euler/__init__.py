"""diffkit plugin: the k-diffusion Euler schedulers (Euler, Euler ancestral, EDM Euler) and their shared base."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

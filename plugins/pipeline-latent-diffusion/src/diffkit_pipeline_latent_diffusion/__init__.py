"""diffkit plugin: latent diffusion pipelines (``LDMPipeline``, unconditional).

The pipeline lives in :mod:`diffkit_pipeline_latent_diffusion.unconditional`; this module
imports nothing heavy (its names load on first use) so that plugin discovery stays cheap.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

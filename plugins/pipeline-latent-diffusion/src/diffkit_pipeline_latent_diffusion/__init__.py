"""diffkit plugin: latent diffusion pipelines (``LDMPipeline``, unconditional).

The pipeline lives in :mod:`diffkit_pipeline_latent_diffusion.unconditional`; this module
imports nothing so that plugin discovery stays cheap.
"""

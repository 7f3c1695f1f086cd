"""diffkit plugin: autoencoder models with diffusers' config and weight layout.

``AutoencoderKL`` (the Stable Diffusion VAE) lives in :mod:`.autoencoder_kl`, ``VQModel``
(latent diffusion's VQ-GAN, MoVQ) in :mod:`.vq_model`. The encoder, decoder, latent
distribution, quantizer and tiling live in their own modules so that every autoencoder of
the family reuses them; this package module
imports nothing until one of its names is used, so that plugin discovery stays cheap.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

"""diffkit plugin: the UNet denoisers with diffusers' config and weight layout.

``UNet2DModel`` lives in :mod:`diffkit_models_unet.unet_2d`, ``UNet1DModel`` (Dance Diffusion,
RL planners) in :mod:`diffkit_models_unet.unet_1d`, ``UNet2DConditionModel`` (Stable Diffusion
and relatives) in :mod:`diffkit_models_unet.unet_2d_condition`; this package module imports nothing heavy
(its names load on first use) so that plugin discovery stays cheap.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

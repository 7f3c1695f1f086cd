"""diffkit plugin: ``UNet2DModel``, the 2D UNet denoiser with diffusers' config and weight layout.

The model lives in :mod:`diffkit_models_unet.unet_2d`; this package module imports nothing so
that plugin discovery stays cheap.
"""

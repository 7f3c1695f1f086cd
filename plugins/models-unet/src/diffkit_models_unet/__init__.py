"""diffkit plugin: the UNet denoisers with diffusers' config and weight layout.

``UNet2DModel`` lives in :mod:`diffkit_models_unet.unet_2d`, ``UNet1DModel`` (Dance Diffusion,
RL planners) in :mod:`diffkit_models_unet.unet_1d`; this package module imports nothing so
that plugin discovery stays cheap.
"""

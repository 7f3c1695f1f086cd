"""diffkit plugin hooks: register ``UNet2DModel`` and ``UNet1DModel`` without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("UNet2DModel", "diffkit_models_unet.unet_2d:UNet2DModel")
    register("UNet1DModel", "diffkit_models_unet.unet_1d:UNet1DModel")

"""diffkit plugin hooks: register the UNet models without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("UNet2DModel", "diffkit_models_unet.unet_2d:UNet2DModel")
    register("UNet1DModel", "diffkit_models_unet.unet_1d:UNet1DModel")
    register("UNet2DConditionModel", "diffkit_models_unet.unet_2d_condition:UNet2DConditionModel")

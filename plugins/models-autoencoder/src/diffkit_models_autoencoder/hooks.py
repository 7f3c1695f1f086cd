"""diffkit plugin hooks: register the autoencoder models without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("VQModel", "diffkit_models_autoencoder.vq_model:VQModel")

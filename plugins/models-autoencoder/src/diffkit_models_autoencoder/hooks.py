"""diffkit plugin hooks: register the autoencoder models without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("AutoencoderKL", "diffkit_models_autoencoder.autoencoder_kl:AutoencoderKL")
    register("VQModel", "diffkit_models_autoencoder.vq_model:VQModel")

"""diffkit plugin hooks: register the Stable Diffusion pipelines without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_pipelines(register: Register) -> None:
    register(
        "StableDiffusionPipeline",
        "diffkit_pipeline_stable_diffusion.text_to_image:StableDiffusionPipeline",
        task="text-to-image",
        family="stable-diffusion",
    )

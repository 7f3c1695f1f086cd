"""diffkit plugin hooks: register the Stable Diffusion XL pipelines without importing torch."""

from diffkit.hookspecs import Register, hookimpl

_MODULE = "diffkit_pipeline_stable_diffusion_xl"


@hookimpl
def register_pipelines(register: Register) -> None:
    family = "stable-diffusion-xl"
    register("StableDiffusionXLPipeline", f"{_MODULE}.text_to_image:StableDiffusionXLPipeline",
             task="text-to-image", family=family)
    register("StableDiffusionXLImg2ImgPipeline", f"{_MODULE}.image_to_image:StableDiffusionXLImg2ImgPipeline",
             task="image-to-image", family=family)
    register("StableDiffusionXLInpaintPipeline", f"{_MODULE}.inpaint:StableDiffusionXLInpaintPipeline",
             task="inpainting", family=family)

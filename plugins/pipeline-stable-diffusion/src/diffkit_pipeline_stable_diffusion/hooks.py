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
    register(
        "StableDiffusionImg2ImgPipeline",
        "diffkit_pipeline_stable_diffusion.image_to_image:StableDiffusionImg2ImgPipeline",
        task="image-to-image",
        family="stable-diffusion",
    )
    register(
        "StableDiffusionInpaintPipeline",
        "diffkit_pipeline_stable_diffusion.inpaint:StableDiffusionInpaintPipeline",
        task="inpainting",
        family="stable-diffusion",
    )
    register(
        "StableDiffusionInstructPix2PixPipeline",
        "diffkit_pipeline_stable_diffusion.instruct_pix2pix:StableDiffusionInstructPix2PixPipeline",
        task="instruct-pix2pix",
        family="stable-diffusion-instruct-pix2pix",  # its 8-channel UNet does no other task
    )
    # each of these loads its own kind of checkpoint (UNet inputs, components), so each is its own family
    register(
        "StableDiffusionDepth2ImgPipeline",
        "diffkit_pipeline_stable_diffusion.depth_to_image:StableDiffusionDepth2ImgPipeline",
        task="depth-to-image",
        family="stable-diffusion-depth",
    )
    register(
        "StableDiffusionImageVariationPipeline",
        "diffkit_pipeline_stable_diffusion.image_variation:StableDiffusionImageVariationPipeline",
        task="image-variation",
        family="stable-diffusion-image-variation",
    )
    register(
        "StableDiffusionUpscalePipeline",
        "diffkit_pipeline_stable_diffusion.upscale:StableDiffusionUpscalePipeline",
        task="super-resolution",
        family="stable-diffusion-x4-upscaler",
    )
    register(
        "StableDiffusionLatentUpscalePipeline",
        "diffkit_pipeline_stable_diffusion.latent_upscale:StableDiffusionLatentUpscalePipeline",
        task="latent-upscaling",
        family="stable-diffusion-latent-upscaler",
    )

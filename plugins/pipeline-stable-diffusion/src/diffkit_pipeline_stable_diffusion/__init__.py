"""diffkit plugin: the Stable Diffusion pipeline family.

``base`` holds what every task of the family shares (prompt encoding, classifier-free
guidance, latent preparation, decoding and the safety check); one module per task builds on
it (``text_to_image``, ``image_to_image``, ``inpaint``, ``instruct_pix2pix``, ``depth_to_image``,
``image_variation``, ``upscale``, ``latent_upscale``); ``image_conditioning`` holds what the
image-conditioned tasks share (the strength cut of the schedule, VAE encoding, input checks). Public classes are imported lazily, so importing this package (as
plugin discovery does through ``hooks``) stays cheap.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    extra={
        "StableDiffusionPipelineOutput": ".outputs",
        "StableDiffusionBase": ".base",
    },
)

"""diffkit plugin: the Stable Diffusion XL pipelines (base, refiner, inpainting).

They build on the Stable Diffusion family base of ``diffkit-pipeline-stable-diffusion``;
``base`` adds what XL changes (two text encoders, pooled embeddings, micro-conditioning,
the float32 VAE decode, the optional watermark). Public classes are imported lazily.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    extra={
        "StableDiffusionXLPipelineOutput": ".outputs",
        "StableDiffusionXLBase": ".base",
        "StableDiffusionXLWatermarker": ".watermark",
    },
)

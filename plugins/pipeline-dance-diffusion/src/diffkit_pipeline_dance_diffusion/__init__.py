"""diffkit plugin: ``DanceDiffusionPipeline`` (unconditional audio) and ``write_wav``.

The pipeline lives in :mod:`diffkit_pipeline_dance_diffusion.pipeline`; ``write_wav`` (no
torch needed) in :mod:`diffkit_pipeline_dance_diffusion.wav`. This module imports nothing heavy,
so that plugin discovery stays cheap.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    extra={
        "write_wav": ".wav",
    },
)

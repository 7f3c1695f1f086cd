"""``StableDiffusionXLPipelineOutput``: the images of an XL call (XL pipelines run no safety checker)."""

from __future__ import annotations

import dataclasses
from typing import Any

from diffkit.outputs import BaseOutput


@dataclasses.dataclass
class StableDiffusionXLPipelineOutput(BaseOutput):
    """``images`` as ``output_type`` asked (``"latent"``: the latents, ready for a refiner)."""

    images: Any

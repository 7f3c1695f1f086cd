"""``StableDiffusionPipelineOutput``: the images and, per image, whether the safety checker flagged it."""

from __future__ import annotations

import dataclasses
from typing import Any

from diffkit.outputs import BaseOutput


@dataclasses.dataclass
class StableDiffusionPipelineOutput(BaseOutput):
    """``images`` as ``output_type`` asked; ``nsfw_content_detected`` is ``None`` without a safety checker.

    Flagged images are blacked out by the safety checker before post-processing.
    """

    images: Any
    nsfw_content_detected: list[bool] | None = None

"""The optional invisible watermark of SDXL images (Stability AI's bits, DWT-DCT), through ``invisible-watermark``.

The package is an extra (``pip install 'diffkit-pipeline-stable-diffusion-xl[watermark]'``):
without it the pipelines run unwatermarked and say so once.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import numpy as np
import torch

logger = logging.getLogger("diffkit.pipeline.stable_diffusion_xl")

#: the 48-bit message Stability AI's reference sampling scripts embed
MESSAGE = 0b101100111110110010010000011110111011000110011110
BITS = [int(bit) for bit in bin(MESSAGE)[2:]]
#: images narrower than this are returned unmarked (the encoder cannot hold the message)
MIN_WIDTH = 256
INSTALL_HINT = (
    "python -m pip install 'diffkit-pipeline-stable-diffusion-xl[watermark]' (the invisible-watermark package)"
)


def watermark_available() -> bool:
    """Whether ``invisible-watermark`` (import name ``imwatermark``) is installed."""
    return importlib.util.find_spec("imwatermark") is not None


class StableDiffusionXLWatermarker:
    """Embeds :data:`BITS` in decoded images (``NCHW`` in ``[-1, 1]``) with the DWT-DCT method."""

    def __init__(self) -> None:
        try:
            from imwatermark import WatermarkEncoder
        except ImportError as exc:
            raise ImportError(f"add_watermarker=True needs the invisible-watermark package: {INSTALL_HINT}") from exc
        self.encoder = WatermarkEncoder()
        self.encoder.set_watermark("bits", BITS)

    def apply_watermark(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] < MIN_WIDTH:
            return images
        # [-1, 1] NCHW -> [0, 255] NHWC, BGR as the encoder expects
        pixels = (255 * (images / 2 + 0.5)).cpu().permute(0, 2, 3, 1).float().numpy()[..., ::-1]
        marked = np.array([self.encoder.encode(np.ascontiguousarray(p), "dwtDct")[..., ::-1] for p in pixels])
        # back to RGB NCHW in [-1, 1]: 2 (x / 255 - 0.5)
        result = torch.from_numpy(np.ascontiguousarray(marked)).permute(0, 3, 1, 2)
        return torch.clamp(2 * (result / 255 - 0.5), min=-1.0, max=1.0)


_reported: list[bool] = []


def make_watermarker(add_watermarker: bool | None, pipeline: str) -> Any:
    """The watermarker for ``add_watermarker``: ``None`` means "where the package is installed".

    When ``None`` finds no package, a warning says so once per process.
    """
    if add_watermarker is None:
        if not watermark_available():
            if not _reported:
                _reported.append(True)
                logger.warning(
                    "%s: images are not watermarked, invisible-watermark is not installed (%s; "
                    "add_watermarker=False silences this)", pipeline, INSTALL_HINT,
                )
            return None
        add_watermarker = True
    return StableDiffusionXLWatermarker() if add_watermarker else None

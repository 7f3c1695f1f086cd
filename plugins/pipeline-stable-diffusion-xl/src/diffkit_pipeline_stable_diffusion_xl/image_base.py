"""``StableDiffusionXLImageBase``: what SDXL img2img (and the refiner) and inpainting share.

Their components and settings (``requires_aesthetics_score`` for refiner UNets), where a call
starts in the schedule (``strength``, or ``denoising_start`` for the refiner) and the time ids
with the aesthetic score.
"""

from __future__ import annotations

from typing import Any

import torch

from .base import StableDiffusionXLBase
from .micro_conditioning import is_fraction, refiner_start, strength_start

ImageInput = Any


class StableDiffusionXLImageBase(StableDiffusionXLBase):
    """Base of the SDXL pipelines that start from an image; no ``__call__`` of its own."""

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        text_encoder_2: Any,
        tokenizer: Any,
        tokenizer_2: Any,
        unet: Any,
        scheduler: Any,
        image_encoder: Any = None,
        feature_extractor: Any = None,
        requires_aesthetics_score: bool = False,
        force_zeros_for_empty_prompt: bool = True,
        add_watermarker: bool | None = None,
    ) -> None:
        self._init_xl(
            add_watermarker,
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            unet=unet,
            scheduler=scheduler,
            image_encoder=image_encoder,
            feature_extractor=feature_extractor,
            requires_aesthetics_score=requires_aesthetics_score,
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        )

    @property
    def requires_aesthetics_score(self) -> bool:
        return bool(self._settings.get("requires_aesthetics_score", False))

    def start_index(
        self, state: Any, num_inference_steps: int, strength: float, denoising_start: float | None
    ) -> int:
        """Where in the plan this call starts: by ``strength``, or (refiner) at ``denoising_start``."""
        order = self.scheduler.order
        if is_fraction(denoising_start):
            return refiner_start(state.timesteps, denoising_start, self.scheduler.config.num_train_timesteps, order)
        return strength_start(num_inference_steps, strength, order)

    def xl_time_ids(
        self,
        sizes: dict[str, Any],
        aesthetic_score: float,
        negative_aesthetic_score: float,
        dtype: torch.dtype,
        pooled: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Positive and negative time ids; the negative crop is used only with the aesthetic score, as in diffusers."""
        aesthetics = self.requires_aesthetics_score
        positive = self.time_ids(
            sizes["original_size"], sizes["crops_coords_top_left"], sizes["target_size"], dtype, pooled,
            aesthetic_score, aesthetics,
        )
        negative = self.time_ids(
            sizes["negative_original_size"],
            sizes["negative_crops_coords_top_left"] if aesthetics else sizes["crops_coords_top_left"],
            sizes["negative_target_size"], dtype, pooled, negative_aesthetic_score, aesthetics,
        )
        return positive, negative

    @staticmethod
    def check_strength_and_range(strength: float, denoising_start: float | None, denoising_end: float | None) -> None:
        if not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        if is_fraction(denoising_start) and is_fraction(denoising_end) and denoising_start >= denoising_end:
            raise ValueError(
                f"denoising_start ({denoising_start}) must be below denoising_end ({denoising_end}): "
                "the call would run no step"
            )

"""``StableDiffusionXLImageBase``: what SDXL img2img (and the refiner) and inpainting share.

Their components and settings (``requires_aesthetics_score`` for refiner UNets), where a call
starts in the schedule (``strength``, or ``denoising_start`` for the refiner) and the time ids
with the aesthetic score.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffkit.scheduler import SchedulerState
from diffkit_pipeline_stable_diffusion.image_conditioning import check_steps_left, check_strength, strength_timesteps

from .base import StableDiffusionXLBase
from .micro_conditioning import is_fraction, refiner_start

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

    def plan_from(
        self,
        num_inference_steps: int,
        device: torch.device,
        timesteps: Sequence[int] | None,
        sigmas: Sequence[float] | None,
        strength: float,
        denoising_start: float | None,
    ) -> tuple[SchedulerState, torch.Tensor]:
        """The call's scheduler state (begin index set) and the timesteps it runs: the last ``strength``
        share of the plan, or (refiner) those after ``denoising_start``."""
        state, steps = self.plan_call(num_inference_steps, device, timesteps, sigmas)
        order = self.scheduler.order
        if not is_fraction(denoising_start):
            run, steps = strength_timesteps(state, steps, strength, order)
            check_steps_left(steps, strength, num_inference_steps)
            return state, run
        begin = refiner_start(state.timesteps, denoising_start, self.scheduler.config.num_train_timesteps, order)
        state.set_begin_index(begin)
        return state, state.timesteps[begin:]

    def image_conditioning(
        self,
        latents: torch.Tensor,
        pooled: torch.Tensor,
        negative_pooled: torch.Tensor | None,
        micro: dict[str, Any],
        images: int,
        guidance_enabled: bool,
        device: torch.device,
        dtype: torch.dtype,
    ) -> dict[str, torch.Tensor]:
        """``add_text_embeds``/``add_time_ids`` for an image task; sizes default to the latents' pixel size.

        ``micro`` holds the call's size, crop and aesthetic arguments. The negative branch takes
        the positive sizes where none are given, and the positive crop unless the aesthetic
        score is on, as diffusers does.
        """
        size = tuple(side * self.vae_scale_factor for side in latents.shape[-2:])
        original = micro["original_size"] or size
        target = micro["target_size"] or size
        aesthetics = self.requires_aesthetics_score
        positive = self.time_ids(
            original, micro["crops_coords_top_left"], target, dtype, pooled, micro["aesthetic_score"], aesthetics
        )
        negative = self.time_ids(
            micro["negative_original_size"] or original,
            micro["negative_crops_coords_top_left"] if aesthetics else micro["crops_coords_top_left"],
            micro["negative_target_size"] or target,
            dtype, pooled, micro["negative_aesthetic_score"], aesthetics,
        )
        return self.added_conditioning(
            pooled, negative_pooled, positive, negative, images, guidance_enabled, device
        )

    @staticmethod
    def check_strength_and_range(strength: float, denoising_start: float | None, denoising_end: float | None) -> None:
        check_strength(strength)
        if is_fraction(denoising_start) and is_fraction(denoising_end) and denoising_start >= denoising_end:
            raise ValueError(
                f"denoising_start ({denoising_start}) must be below denoising_end ({denoising_end}): "
                "the call would run no step"
            )

"""``StableDiffusionXLPipeline``: text-to-image with SDXL (Podell et al., 2023), the base model of the ensemble."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffkit_pipeline_stable_diffusion.base import Generator, Prompt, StepCallback

from .base import Size, StableDiffusionXLBase
from .outputs import StableDiffusionXLPipelineOutput


class StableDiffusionXLPipeline(StableDiffusionXLBase):
    """Generate images from text: two CLIP text encoders condition a ``UNet2DConditionModel`` with
    size and crop micro-conditioning; an ``AutoencoderKL`` decodes its latents.

    Components and settings are diffusers' (``force_zeros_for_empty_prompt``, ``add_watermarker``;
    ``image_encoder``/``feature_extractor`` are kept and saved but IP-Adapter image prompts are
    not supported yet), so SDXL checkpoints load unchanged. ``add_watermarker=None`` watermarks
    where the ``invisible-watermark`` package is installed.
    """

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
            force_zeros_for_empty_prompt=force_zeros_for_empty_prompt,
        )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 5.0,
        negative_prompt: Prompt | None = None,
        negative_prompt_2: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        original_size: Size | None = None,
        crops_coords_top_left: Size = (0, 0),
        target_size: Size | None = None,
        negative_original_size: Size | None = None,
        negative_crops_coords_top_left: Size = (0, 0),
        negative_target_size: Size | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionXLPipelineOutput | tuple[Any]:
        """Generate ``num_images_per_prompt`` images for each prompt.

        ``prompt_2``/``negative_prompt_2`` go to the second text encoder (default: the first
        ones). ``original_size``, ``crops_coords_top_left`` and ``target_size`` (default: the
        output size) are the micro-conditioning; the ``negative_*`` variants condition the
        unconditional branch (used only when both negative sizes are given). ``denoising_end``
        in (0, 1) stops after that share of the schedule, for a refiner to finish
        (``output_type="latent"``). Guidance, ``guidance_rescale``, ``timesteps``/``sigmas``,
        ``eta``, ``clip_skip`` and callbacks are as in ``StableDiffusionPipeline``. Returns a
        :class:`StableDiffusionXLPipelineOutput`, or ``(images,)`` with ``return_dict=False``.
        """
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        original_size = original_size or (height, width)
        target_size = target_size or (height, width)
        batch = self.check_xl_prompt_inputs(
            prompt, prompt_2, negative_prompt, negative_prompt_2, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, num_images_per_prompt,
        )
        self.check_image_size(height, width)
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        device = self._execution_device
        guidance = self.guidance(guidance_scale, guidance_rescale)

        prompt_embeds, negative_prompt_embeds, pooled, negative_pooled = self.encode_prompt(
            prompt,
            prompt_2,
            device,
            num_images_per_prompt,
            guidance.enabled,
            negative_prompt,
            negative_prompt_2,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            lora_scale=(cross_attention_kwargs or {}).get("scale"),
            clip_skip=clip_skip,
        )
        state, _ = self.plan_call(num_inference_steps, device, timesteps, sigmas)
        images_total = batch * num_images_per_prompt
        latents = self.prepare_latents(
            images_total, self.unet.config.in_channels, height, width, prompt_embeds.dtype, device, generator,
            latents, state.init_noise_sigma,
        )
        time_ids = self.time_ids(original_size, crops_coords_top_left, target_size, prompt_embeds.dtype, pooled)
        negative_time_ids = time_ids
        if negative_original_size is not None and negative_target_size is not None:
            negative_time_ids = self.time_ids(
                negative_original_size, negative_crops_coords_top_left, negative_target_size,
                prompt_embeds.dtype, pooled,
            )
        conditioning = self.added_conditioning(
            pooled, negative_pooled, time_ids, negative_time_ids, images_total, guidance.enabled, device
        )
        state.set_begin_index(0)
        latents = self.denoise(
            state,
            latents,
            prompt_embeds,
            negative_prompt_embeds,
            guidance,
            self.step_options(state, eta, generator),
            timestep_cond=self.timestep_condition(guidance_scale, images_total, device, latents.dtype),
            cross_attention_kwargs=cross_attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            timesteps=self.end_early(state.timesteps, denoising_end),
            extra_tensors=conditioning,
        )
        images, _ = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        return self.finish(images, return_dict)

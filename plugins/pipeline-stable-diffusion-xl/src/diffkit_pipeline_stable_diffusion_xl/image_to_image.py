"""``StableDiffusionXLImg2ImgPipeline``: SDXL image-to-image, and the refiner that finishes the base model's latents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffkit_pipeline_stable_diffusion.base import Generator, Prompt, StepCallback
from diffkit_pipeline_stable_diffusion.image_conditioning import check_image_input

from .base import Size
from .image_base import ImageInput, StableDiffusionXLImageBase
from .outputs import StableDiffusionXLPipelineOutput


class StableDiffusionXLImg2ImgPipeline(StableDiffusionXLImageBase):
    """Re-draw an image (or finish latents) guided by text.

    The SDXL refiner is this class with only ``text_encoder_2``/``tokenizer_2`` and
    ``requires_aesthetics_score=True`` (its UNet is conditioned on an aesthetic score in
    place of the target size). Components and settings are diffusers'.
    """

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        image: ImageInput = None,
        strength: float = 0.3,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        denoising_start: float | None = None,
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
        aesthetic_score: float = 6.0,
        negative_aesthetic_score: float = 2.5,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionXLPipelineOutput | tuple[Any]:
        """Re-draw ``image`` (PIL, numpy, tensor or a list; or latents with the VAE's latent channels).

        ``strength`` in [0, 1] is how much of the schedule runs: how far the result may move
        from the image. ``denoising_start`` in (0, 1) (the refiner) instead starts where a base
        call with that ``denoising_end`` stopped, taking its latents (``output_type="latent"``)
        as ``image`` without adding noise. ``aesthetic_score``/``negative_aesthetic_score``
        condition a refiner (``requires_aesthetics_score``). The rest is as in
        :class:`StableDiffusionXLPipeline`. ``latents`` replaces the noised image latents.
        """
        check_image_input(image, "image")
        self.check_strength_and_range(strength, denoising_start, denoising_end)
        batch = self.check_xl_prompt_inputs(
            prompt, prompt_2, negative_prompt, negative_prompt_2, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, num_images_per_prompt,
        )
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
        pixels = self.preprocess_image(image)

        state, run = self.plan_from(num_inference_steps, device, timesteps, sigmas, strength, denoising_start)
        images_total = batch * num_images_per_prompt
        if latents is None:
            latents = self.image_latents(
                pixels, images_total, prompt_embeds.dtype, device, generator, statistics=True,
                repeat_before_encoding=True,
            )
            if denoising_start is None:
                noise = self.prepare_noise_latents(
                    images_total, latents.shape[-2] * self.vae_scale_factor, latents.shape[-1] * self.vae_scale_factor,
                    prompt_embeds.dtype, device, generator,
                )
                latents = state.add_noise(latents, noise, run[:1].repeat(images_total))
        micro = dict(
            original_size=original_size, crops_coords_top_left=crops_coords_top_left, target_size=target_size,
            negative_original_size=negative_original_size,
            negative_crops_coords_top_left=negative_crops_coords_top_left, negative_target_size=negative_target_size,
            aesthetic_score=aesthetic_score, negative_aesthetic_score=negative_aesthetic_score,
        )
        conditioning = self.image_conditioning(
            latents, pooled, negative_pooled, micro, images_total, guidance.enabled, device, prompt_embeds.dtype
        )
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
            timesteps=self.end_early(run, denoising_end),
            extra_tensors=conditioning,
        )
        images, _ = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        return self.finish(images, return_dict)

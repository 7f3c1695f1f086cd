"""``StableDiffusionPipeline``: text-to-image with Stable Diffusion 1.x/2.x (Rombach et al., 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .base import Generator, Prompt, StableDiffusionBase, StepCallback
from .outputs import StableDiffusionPipelineOutput


class StableDiffusionPipeline(StableDiffusionBase):
    """Generate images from text: a CLIP text encoder conditions a ``UNet2DConditionModel`` that
    denoises ``AutoencoderKL`` latents, which the VAE then decodes.

    Components and settings are diffusers' (``safety_checker``, ``feature_extractor`` and
    ``image_encoder`` are optional), so diffusers checkpoints load unchanged. ``image_encoder``
    is kept and saved but not used: IP-Adapter image prompts are not supported yet.
    """

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        image_encoder: Any = None,
        requires_safety_checker: bool = True,
    ) -> None:
        self._init_family(
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            image_encoder=image_encoder,
            requires_safety_checker=requires_safety_checker,
        )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        guidance_rescale: float = 0.0,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Generate ``num_images_per_prompt`` images for each prompt.

        ``guidance_scale`` > 1 turns classifier-free guidance on (towards ``prompt``, away from
        ``negative_prompt``); ``guidance_rescale`` in [0, 1] tempers it. ``height``/``width``
        default to the UNet's training size. ``timesteps`` or ``sigmas`` replace the schedule
        where the scheduler takes them. ``eta`` reaches only schedulers whose step has it
        (DDIM). ``clip_skip=k`` conditions on the text encoder's hidden states k layers before
        the last. ``output_type``: ``"pil"``, ``"np"`` (NHWC in [0, 1]), ``"pt"`` (NCHW in
        [0, 1]) or ``"latent"``. Returns a :class:`StableDiffusionPipelineOutput`, or
        ``(images, nsfw_content_detected)`` with ``return_dict=False``.
        """
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        self.check_image_size(height, width)
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        device = self._execution_device
        guidance = self.guidance(guidance_scale, guidance_rescale)

        lora_scale = (cross_attention_kwargs or {}).get("scale")
        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            guidance.enabled,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            lora_scale=lora_scale,
            clip_skip=clip_skip,
        )
        state = self.plan_schedule(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
        images_total = batch * num_images_per_prompt
        latents = self.prepare_latents(
            images_total,
            self.unet.config.in_channels,
            height,
            width,
            prompt_embeds.dtype,
            device,
            generator,
            latents,
            state.init_noise_sigma,
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
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

"""``StableDiffusionImg2ImgPipeline``: text-guided image-to-image with Stable Diffusion (SDEdit, Meng et al., 2022)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from diffkit.randomness import randn_tensor
from diffkit.scheduler import SchedulerState

from .base import Generator, Prompt, StableDiffusionBase, StepCallback
from .image_conditioning import (
    check_generator_count,
    check_image_input,
    check_steps_left,
    check_strength,
    encode_with_vae,
    preprocess_input,
    repeat_to_batch,
    strength_timesteps,
)
from .outputs import StableDiffusionPipelineOutput


class StableDiffusionImg2ImgPipeline(StableDiffusionBase):
    """Re-imagine ``image`` towards a prompt: the image's latents are noised to the point of the
    schedule that ``strength`` picks, then denoised from there with text guidance.

    The components are :class:`StableDiffusionPipeline`'s, so one checkpoint serves both
    (``StableDiffusionImg2ImgPipeline.from_pretrained(sd_folder)`` or
    ``AutoPipelineForImage2Image.from_pipe(text_to_image_pipe)``).
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

    def check_unet_channels(self) -> None:
        channels, latent = self.unet.config.in_channels, self.vae.config.latent_channels
        if channels != latent:
            task = {9: " (an inpainting UNet: use StableDiffusionInpaintPipeline)",
                    8: " (an InstructPix2Pix UNet: use StableDiffusionInstructPix2PixPipeline)"}.get(channels, "")
            raise ValueError(
                f"{type(self).__name__} needs a UNet that takes the {latent} latent channels; this one has "
                f"in_channels={channels}{task}"
            )

    def prepare_image_latents(
        self,
        pixels: torch.Tensor,
        timestep: torch.Tensor,
        batch_size: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        state: SchedulerState,
    ) -> torch.Tensor:
        """Preprocessed image (pixels, or latents with the VAE's channels) -> its latents noised to ``timestep``.

        Draws as diffusers does: the VAE posterior sample first (per image with a list of
        generators), then the noise.
        """
        pixels = pixels.to(device=device, dtype=dtype)
        if pixels.shape[1] == self.vae.config.latent_channels:
            init = pixels
        else:
            check_generator_count(generator, batch_size)
            if isinstance(generator, list):
                pixels = repeat_to_batch(pixels, batch_size, "image")
            init = encode_with_vae(self.vae, pixels, generator)
        init = repeat_to_batch(init, batch_size, "image")
        noise = randn_tensor(init.shape, generator=generator, device=device, dtype=dtype)
        return state.add_noise(init, noise, timestep)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        strength: float = 0.8,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        guidance_scale: float = 7.5,
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        cross_attention_kwargs: dict[str, Any] | None = None,
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Transform ``image`` (PIL, numpy ``NHWC`` in [0, 1], tensor ``NCHW`` in [0, 1], lists of
        them, or latents with the VAE's channel count) guided by ``prompt``.

        ``strength`` in [0, 1]: how far into the noise the image goes; 1 ignores it almost
        entirely, and only ``int(strength * num_inference_steps)`` steps run. The image keeps
        its size, rounded down to a multiple of the VAE factor. Other arguments as
        :class:`StableDiffusionPipeline`.
        """
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        check_strength(strength)
        check_image_input(image, "image")
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        self.check_unet_channels()
        device = self._execution_device
        guidance = self.guidance(guidance_scale)

        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            guidance.enabled,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            lora_scale=(cross_attention_kwargs or {}).get("scale"),
            clip_skip=clip_skip,
        )
        pixels = preprocess_input(self.image_processor, image, "image")
        state = self.plan_schedule(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
        planned = state.num_inference_steps if state.num_inference_steps is not None else num_inference_steps
        run, steps = strength_timesteps(state, planned, strength, self.scheduler.order)
        check_steps_left(steps, strength, planned)
        images_total = batch * num_images_per_prompt
        latents = self.prepare_image_latents(
            pixels, run[:1].repeat(images_total), images_total, prompt_embeds.dtype, device, generator, state
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
            timesteps=run,
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

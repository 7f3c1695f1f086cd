"""``StableDiffusionInstructPix2PixPipeline``: edit an image by a written instruction (Brooks et al., 2023).

The UNet takes 8 channels: the noisy latents and the input image's latents. Guidance runs three
branches in one UNet call (text and image, image only, neither) and weighs them with
``guidance_scale`` (towards the instruction) and ``image_guidance_scale`` (towards the image).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .base import Generator, Guidance, Prompt, StableDiffusionBase, StepCallback
from .image_conditioning import check_image_input, preprocess_input, repeat_to_batch
from .outputs import StableDiffusionPipelineOutput


def instruct_pix2pix_guidance(
    text: torch.Tensor, image: torch.Tensor, uncond: torch.Tensor, text_scale: float, image_scale: float
) -> torch.Tensor:
    # eps = eps_uncond + s_T (eps_text,image - eps_image) + s_I (eps_image - eps_uncond)
    return uncond + text_scale * (text - image) + image_scale * (image - uncond)


@dataclass(frozen=True)
class ImageTextGuidance(Guidance):
    """Three-branch guidance: the UNet sees ``[text + image; image only; neither]`` in one batch."""

    image_scale: float = 1.5

    def batch_latents(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([latents, latents, latents]) if self.enabled else latents

    def batch_embeddings(self, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None) -> torch.Tensor:
        # the image-only and the unconditional branches both read the negative prompt
        if not self.enabled:
            return prompt_embeds
        return torch.cat([prompt_embeds, negative_prompt_embeds, negative_prompt_embeds])

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return prediction
        text, image, uncond = prediction.chunk(3)
        return instruct_pix2pix_guidance(text, image, uncond, self.scale, self.image_scale)


class StableDiffusionInstructPix2PixPipeline(StableDiffusionBase):
    """Apply an instruction ("make it snowy") to ``image`` with an InstructPix2Pix UNet (8 input channels)."""

    _callback_tensor_inputs = ("latents", "prompt_embeds", "image_latents")

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

    def pix2pix_guidance(self, guidance_scale: float, image_guidance_scale: float) -> ImageTextGuidance:
        """On when ``guidance_scale > 1`` and ``image_guidance_scale >= 1``, as diffusers decides."""
        enabled = guidance_scale > 1.0 and image_guidance_scale >= 1.0
        return ImageTextGuidance(guidance_scale, 0.0, enabled, image_guidance_scale)

    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        return torch.cat([model_input, tensors["image_latents"]], dim=1)

    def prepare_image_latents(
        self, pixels: torch.Tensor, batch_size: int, dtype: torch.dtype, device: torch.device, doubled: bool
    ) -> torch.Tensor:
        """The image's latents (the VAE posterior's mode, unscaled), tiled to the batch; with guidance
        ``[latents; latents; zeros]`` for the three branches."""
        pixels = pixels.to(device=device, dtype=dtype)
        if pixels.shape[1] == self.vae.config.latent_channels:
            latents = pixels
        else:
            latents = self.vae.encode(pixels).latent_dist.mode()
        latents = repeat_to_batch(latents, batch_size, "image")
        return torch.cat([latents, latents, torch.zeros_like(latents)]) if doubled else latents

    def check_unet_channels(self, image_channels: int) -> None:
        latent_channels = self.vae.config.latent_channels
        expected = latent_channels + image_channels
        if self.unet.config.in_channels != expected:
            raise ValueError(
                f"{type(self).__name__} needs a UNet with {expected} input channels (latents + image latents, an "
                f"InstructPix2Pix UNet); this one has in_channels={self.unet.config.in_channels}"
            )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        num_inference_steps: int = 100,
        guidance_scale: float = 7.5,
        image_guidance_scale: float = 1.5,
        negative_prompt: Prompt | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        cross_attention_kwargs: dict[str, Any] | None = None,
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Edit ``image`` (PIL, numpy, tensor or lists; its size rounded down to the VAE factor) as
        ``prompt`` instructs.

        ``image_guidance_scale`` >= 1 pulls towards the input image; guidance is on only when
        ``guidance_scale > 1`` as well. Other arguments as :class:`StableDiffusionPipeline`.
        """
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        check_image_input(image, "image")
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        device = self._execution_device
        guidance = self.pix2pix_guidance(guidance_scale, image_guidance_scale)

        prompt_embeds, negative_prompt_embeds = self.encode_prompt(
            prompt,
            device,
            num_images_per_prompt,
            guidance.enabled,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
        )
        pixels = preprocess_input(self.image_processor, image, "image")
        state = self.plan_schedule(num_inference_steps, device)
        images_total = batch * num_images_per_prompt
        dtype = prompt_embeds.dtype
        image_latents = self.prepare_image_latents(pixels, images_total, dtype, device, guidance.enabled)
        self.check_unet_channels(image_latents.shape[1])
        height, width = (side * self.vae_scale_factor for side in image_latents.shape[-2:])
        latents = self.prepare_latents(
            images_total,
            self.vae.config.latent_channels,
            height,
            width,
            dtype,
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
            cross_attention_kwargs=cross_attention_kwargs,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
            extra_tensors={"image_latents": image_latents},
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

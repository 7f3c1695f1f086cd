"""``StableDiffusionUpscalePipeline``: text-guided 4x super-resolution (Stable Diffusion x4 upscaler).

The low-resolution image itself, noised to ``noise_level`` by ``low_res_scheduler``, is
concatenated to the latents (which have the image's size: the VAE decodes them 4x larger),
and the UNet is told the noise level through its class embedding.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor

from .base import (
    Generator,
    Prompt,
    StableDiffusionBase,
    StepCallback,
    check_text_encoder_fits_unet,
    initial_noise,
)
from .image_conditioning import check_image_input
from .outputs import StableDiffusionPipelineOutput

logger = logging.getLogger("diffkit.pipeline.stable_diffusion")

#: the latent scaling of the x4 upscaler's VAE; diffusers uses it whatever the VAE's config says
X4_SCALING_FACTOR = 0.08333


def image_batch_size(image: Any) -> int:
    """How many images ``image`` holds: a list's length, a 4-D array's or tensor's first size, else 1."""
    if isinstance(image, (list, tuple)):
        return len(image)
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4:
        return image.shape[0]
    return 1


class StableDiffusionUpscalePipeline(StableDiffusionBase):
    """Upscale ``image`` 4x guided by a prompt.

    ``low_res_scheduler`` (a DDPM scheduler) noises the low-resolution image to
    ``noise_level`` (at most the ``max_noise_level`` setting); the UNet takes
    ``latent_channels + 3`` input channels and the noise level as its class label. The VAE's
    ``scaling_factor`` is taken as 0.08333 (with a warning when its config says otherwise),
    as diffusers does. ``safety_checker``, ``feature_extractor`` and ``watermarker`` are optional.
    """

    optional_components = ("safety_checker", "feature_extractor", "watermarker")

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        low_res_scheduler: Any,
        scheduler: Any,
        safety_checker: Any = None,
        feature_extractor: Any = None,
        watermarker: Any = None,
        max_noise_level: int = 350,
    ) -> None:
        scaling = getattr(getattr(vae, "config", None), "scaling_factor", X4_SCALING_FACTOR)
        if scaling != X4_SCALING_FACTOR:
            logger.warning(
                "vae config.json says scaling_factor=%s; the x4 upscaler's latents use %s, as diffusers does "
                "(update vae/config.json to silence this)", scaling, X4_SCALING_FACTOR,
            )
        check_text_encoder_fits_unet(text_encoder, unet)
        Pipeline.__init__(
            self,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            low_res_scheduler=low_res_scheduler,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            watermarker=watermarker,
            max_noise_level=max_noise_level,
        )

    @property
    def max_noise_level(self) -> int:
        return self.settings.get("max_noise_level", 350)

    @property
    def image_processor(self) -> VaeImageProcessor:
        return VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, resample="bicubic")

    def check_upscale_inputs(self, image: Any, noise_level: int, batch: int) -> None:
        check_image_input(image, "image")
        images = image_batch_size(image)
        if images != batch:
            raise ValueError(
                f"prompt has batch size {batch} but image has batch size {images}; pass one image per prompt"
            )
        if isinstance(noise_level, bool) or not isinstance(noise_level, (int, np.integer)) or noise_level < 0:
            raise ValueError(f"noise_level must be an integer >= 0, got {noise_level!r}")
        if noise_level > self.max_noise_level:
            raise ValueError(
                f"noise_level={noise_level} is above max_noise_level={self.max_noise_level} (model_index.json); "
                f"pass a noise_level in [0, {self.max_noise_level}]"
            )

    def check_unet_channels(self, image_channels: int) -> None:
        latent_channels = self.vae.config.latent_channels
        if latent_channels + image_channels != self.unet.config.in_channels:
            raise ValueError(
                f"unet takes in_channels={self.unet.config.in_channels} but the upscaler feeds it "
                f"{latent_channels} latent + {image_channels} image channels; load a UNet built for the x4 upscaler"
            )

    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        return torch.cat([model_input, tensors["low_res_image"]], dim=1)

    def unet_conditioning(self, tensors: dict[str, Any]) -> dict[str, Any]:
        return {"class_labels": tensors["noise_level"]}

    def run_safety_checker(
        self, images: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, list[bool] | None]:
        """As the family's, for the upscaler's checker, which also reports watermarks (ignored)."""
        if self.safety_checker is None:
            return images, None
        pil = self.image_processor.postprocess(images, output_type="pil")
        features = self.feature_extractor(pil, return_tensors="pt").to(device)
        images, flagged, *_ = self.safety_checker(images=images, clip_input=features.pixel_values.to(dtype))
        return images, [bool(f) for f in flagged]

    def decode_latents_to_images(
        self, latents: torch.Tensor, output_type: str, device: torch.device, dtype: torch.dtype
    ) -> tuple[Any, list[bool] | None]:
        """As the family's, dividing by the x4 scaling; a float16 VAE with ``force_upcast`` decodes in float32
        (a private copy: the shared VAE stays in float16 for concurrent calls), as diffusers upcasts it."""
        if output_type == "latent":
            return latents, None
        decoder = self.vae
        if decoder.dtype == torch.float16 and getattr(decoder.config, "force_upcast", False):
            decoder = copy.deepcopy(decoder).to(torch.float32)
        latents = latents.to(decoder.dtype)
        images = decoder.decode(latents / X4_SCALING_FACTOR, return_dict=False)[0]
        images, flagged = self.run_safety_checker(images, device, dtype)
        keep = [True] * images.shape[0] if flagged is None else [not f for f in flagged]
        images = self.image_processor.postprocess(images, output_type=output_type, do_denormalize=keep)
        if output_type == "pil" and self.watermarker is not None:
            images = self.watermarker.apply_watermark(images)
        return images, flagged

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        num_inference_steps: int = 75,
        guidance_scale: float = 9.0,
        noise_level: int = 20,
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
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Upscale ``image`` (PIL, numpy ``NHWC`` in [0, 1], tensor ``NCHW`` in [0, 1], or lists; one per
        prompt) 4x.

        ``noise_level`` in ``[0, max_noise_level]``: how much noise the low-resolution image gets
        before conditioning; more gives the model more freedom, less keeps closer to the input.
        Other arguments as :class:`StableDiffusionPipeline`.
        """
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        self.check_upscale_inputs(image, noise_level, batch)
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
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
        low_res = self.image_processor.preprocess(image).to(dtype=prompt_embeds.dtype, device=device)
        self.check_unet_channels(low_res.shape[1])
        state = self.plan_schedule(num_inference_steps, device)

        level = torch.tensor([noise_level], dtype=torch.long, device=device)
        noise = randn_tensor(low_res.shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        low_res = self.low_res_scheduler.add_noise(low_res, noise, level)
        # the whole image batch once per guidance branch and image per prompt, as diffusers tiles it
        copies = (2 if guidance.enabled else 1) * num_images_per_prompt
        low_res = torch.cat([low_res] * copies)
        levels = torch.cat([level] * low_res.shape[0])

        height, width = low_res.shape[2:]
        latents = self.prepare_latents_at(
            batch * num_images_per_prompt, height, width, prompt_embeds.dtype, device, generator, latents,
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
            extra_tensors={"low_res_image": low_res, "noise_level": levels},
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

    def prepare_latents_at(
        self,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        latents: torch.Tensor | None,
        init_noise_sigma: float | torch.Tensor,
    ) -> torch.Tensor:
        """Initial noise at the low-resolution image's own size (the latents are not VAE-downscaled here)."""
        shape = (batch_size, self.vae.config.latent_channels, height, width)
        return initial_noise(shape, generator, device, dtype, latents) * init_noise_sigma

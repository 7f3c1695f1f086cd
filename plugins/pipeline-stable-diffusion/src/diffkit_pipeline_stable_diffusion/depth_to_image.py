"""``StableDiffusionDepth2ImgPipeline``: image-to-image that keeps the input's depth (Stable Diffusion 2 depth).

The UNet takes a fifth input channel, the depth of the image normalised to ``[-1, 1]`` at latent
size: predicted by a DPT depth estimator (``DPTForDepthEstimation`` with its
``DPTImageProcessor``, loaded through ``loader-transformers``) or given by the caller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline

from .base import (
    Generator,
    Prompt,
    StableDiffusionBase,
    StepCallback,
    check_text_encoder_fits_unet,
)
from .image_conditioning import (
    check_image_input,
    check_steps_left,
    check_strength,
    image_size,
    repeat_to_batch,
    strength_timesteps,
)
from .image_to_image import StableDiffusionImg2ImgPipeline


def normalized_depth(depth: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``(batch, H, W)`` depth -> ``(batch, 1, height, width)``, resized bicubically, each map rescaled to [-1, 1]."""
    depth = depth.unsqueeze(1)
    depth = torch.nn.functional.interpolate(depth, size=(height, width), mode="bicubic", align_corners=False)
    low = torch.amin(depth, dim=[1, 2, 3], keepdim=True)
    high = torch.amax(depth, dim=[1, 2, 3], keepdim=True)
    # d' = 2 (d - min) / (max - min) - 1
    return 2.0 * (depth - low) / (high - low) - 1.0


def _image_list(image: Any) -> list[Any]:
    """The images one by one, as the depth estimator's processor takes them (batches split, singles wrapped)."""
    if isinstance(image, (list, tuple)):
        return list(image)
    if isinstance(image, PIL.Image.Image) or (isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim < 4):
        return [image]
    return list(image)


def _is_latents(image: Any, latent_channels: int) -> bool:
    """Whether ``image`` is an ``NCHW`` tensor with the VAE's latent channels (used as latents, not encoded)."""
    return isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == latent_channels


class StableDiffusionDepth2ImgPipeline(StableDiffusionBase):
    """Re-imagine ``image`` towards a prompt while keeping its depth layout.

    Like :class:`StableDiffusionImg2ImgPipeline` (``strength`` picks where in the schedule the
    image's noised latents start), with the depth map concatenated to the latents at every
    step. ``depth_estimator`` and ``feature_extractor`` may be ``None`` when every call passes
    ``depth_map``. There is no safety checker, as in diffusers.
    """

    optional_components = ("depth_estimator", "feature_extractor")
    _callback_tensor_inputs = ("latents", "prompt_embeds", "negative_prompt_embeds", "depth_mask")

    prepare_image_latents = StableDiffusionImg2ImgPipeline.prepare_image_latents

    def __init__(
        self,
        vae: Any,
        text_encoder: Any,
        tokenizer: Any,
        unet: Any,
        scheduler: Any,
        depth_estimator: Any,
        feature_extractor: Any,
    ) -> None:
        check_text_encoder_fits_unet(text_encoder, unet)
        Pipeline.__init__(
            self,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=tokenizer,
            unet=unet,
            scheduler=scheduler,
            depth_estimator=depth_estimator,
            feature_extractor=feature_extractor,
        )

    def run_safety_checker(
        self, images: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, list[bool] | None]:
        return images, None

    def estimate_depth(self, image: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``(batch, H, W)`` relative depth of the images from ``depth_estimator``."""
        if self.depth_estimator is None or self.feature_extractor is None:
            raise ValueError(
                f"{type(self).__name__}: depth_map was not given and the pipeline has no "
                f"{'depth_estimator' if self.depth_estimator is None else 'feature_extractor'} to predict it; "
                "pass depth_map=..., or load the pipeline with a DPTForDepthEstimation and its DPTImageProcessor"
            )
        pixels = self.feature_extractor(images=_image_list(image), return_tensors="pt").pixel_values
        pixels = pixels.to(device=device, dtype=dtype)
        # DPT-Hybrid's batch norms do not run in half precision: autocast keeps them in float32
        half = dtype in (torch.float16, torch.bfloat16)
        context = torch.autocast(device.type, dtype=dtype) if half else contextlib.nullcontext()
        with context:
            return self.depth_estimator(pixels).predicted_depth

    def prepare_depth_map(
        self,
        image: Any,
        depth_map: torch.Tensor | None,
        batch_size: int,
        guidance_enabled: bool,
        dtype: torch.dtype,
        device: torch.device,
    ) -> torch.Tensor:
        """The UNet's depth channel: ``(batch, 1, h, w)`` at latent size, doubled for guidance."""
        factor = self.vae_scale_factor
        height, width = image_size(image)
        if _is_latents(image, self.vae.config.latent_channels):
            height, width = height * factor, width * factor
            if depth_map is None:
                raise ValueError(
                    "image holds latents, from which the depth estimator cannot predict depth; pass depth_map too"
                )
        if depth_map is None:
            depth_map = self.estimate_depth(image, device, dtype)
        else:
            if not isinstance(depth_map, torch.Tensor) or depth_map.ndim != 3:
                raise ValueError(
                    "depth_map must be a torch tensor (batch, height, width), got "
                    + (f"shape {tuple(depth_map.shape)}" if isinstance(depth_map, torch.Tensor)
                       else type(depth_map).__name__)
                )
            depth_map = depth_map.to(device=device, dtype=dtype)
        depth = normalized_depth(depth_map, height // factor, width // factor).to(dtype)
        depth = repeat_to_batch(depth, batch_size, "depth_map")
        return torch.cat([depth, depth]) if guidance_enabled else depth

    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        return torch.cat([model_input, tensors["depth_mask"]], dim=1)

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        depth_map: torch.Tensor | None = None,
        strength: float = 0.8,
        num_inference_steps: int = 50,
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
    ) -> ImagePipelineOutput | tuple[Any]:
        """Transform ``image`` (PIL, numpy ``NHWC`` in [0, 1], tensor ``NCHW`` in [0, 1], or lists of them)
        guided by ``prompt`` and by its depth.

        ``depth_map``: ``(batch, H, W)`` depth (any scale: each map is rescaled to ``[-1, 1]``);
        without it the depth estimator predicts one. ``image`` may also be latents with the
        VAE's channel count when ``depth_map`` is given. ``strength`` in [0, 1] as in img2img. Other
        arguments as :class:`StableDiffusionPipeline`. Returns an ``ImagePipelineOutput``, or
        ``(images,)`` with ``return_dict=False``.
        """
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        check_strength(strength)
        check_image_input(image, "image")
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
        images_total = batch * num_images_per_prompt
        depth_mask = self.prepare_depth_map(
            image, depth_map, images_total, guidance.enabled, prompt_embeds.dtype, device
        )
        pixels = self.image_processor.preprocess(image)
        state = self.plan_schedule(num_inference_steps, device)
        run, steps = strength_timesteps(state, num_inference_steps, strength, self.scheduler.order)
        check_steps_left(steps, strength, num_inference_steps)
        latents = self.prepare_image_latents(
            pixels, run[:1].repeat(images_total), images_total, prompt_embeds.dtype, device, generator, state
        )
        if latents.shape[-2:] != depth_mask.shape[-2:]:
            raise ValueError(
                f"image gives latents of {tuple(latents.shape[-2:])} but the depth map is "
                f"{tuple(depth_mask.shape[-2:])}: "
                "pass images whose sides are multiples of the VAE scale factor "
                f"({self.vae_scale_factor})"
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
            timesteps=run,
            extra_tensors={"depth_mask": depth_mask},
        )
        images, _ = self.decode_latents_to_images(latents, output_type, device, prompt_embeds.dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

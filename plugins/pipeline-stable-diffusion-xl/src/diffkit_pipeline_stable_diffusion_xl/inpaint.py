"""``StableDiffusionXLInpaintPipeline``: SDXL inpainting, with 9-channel inpainting UNets or a plain 4-channel one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from diffkit_pipeline_stable_diffusion.base import Generator, Prompt, StepCallback
from diffkit_pipeline_stable_diffusion.image_conditioning import check_image_input, repeat_to_batch
from diffkit_pipeline_stable_diffusion.inpaint import blend_known_region
from diffkit_processors_image.image_processor import VaeImageProcessor

from .base import Size
from .image_base import ImageInput, StableDiffusionXLImageBase
from .outputs import StableDiffusionXLPipelineOutput

#: UNet input channels: latents + mask + masked-image latents (inpainting UNets), or latents alone
INPAINT_CHANNELS = 9
PLAIN_CHANNELS = 4


def check_mask_crop(padding_mask_crop: int | None, image: Any, mask_image: Any, output_type: str) -> None:
    """``padding_mask_crop`` pastes a PIL result into a PIL original: it needs PIL inputs and output."""
    if padding_mask_crop is None:
        return
    if not isinstance(padding_mask_crop, int) or isinstance(padding_mask_crop, bool) or padding_mask_crop < 0:
        raise ValueError(f"padding_mask_crop must be None or a number of pixels >= 0, got {padding_mask_crop!r}")
    for name, value in (("image", image), ("mask_image", mask_image)):
        if not isinstance(value, PIL.Image.Image):
            raise ValueError(f"padding_mask_crop needs {name} as one PIL image, got {type(value).__name__}")
    if output_type != "pil":
        raise ValueError(f"padding_mask_crop pastes into the PIL original: use output_type='pil', not {output_type!r}")


class StableDiffusionXLInpaintPipeline(StableDiffusionXLImageBase):
    """Re-draw the white part of ``mask_image`` in ``image``, guided by text.

    A 9-channel inpainting UNet sees the mask and the masked image's latents beside the
    latents; a 4-channel UNet (the base or refiner) denoises freely and the known region is
    pasted back, noised to the next step's level, after every step. Components and settings are
    diffusers'.
    """

    _callback_tensor_inputs = (
        "latents", "prompt_embeds", "add_text_embeds", "add_time_ids", "mask", "masked_image_latents",
    )

    @property
    def mask_processor(self) -> VaeImageProcessor:
        """Masks: grayscale, not normalised, binarised at 0.5."""
        return VaeImageProcessor(
            vae_scale_factor=self.vae_scale_factor, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        )

    # -- the loop's hooks ------------------------------------------------------------------
    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        if self.unet.config.in_channels != INPAINT_CHANNELS:
            return model_input
        return torch.cat([model_input, tensors["mask"], tensors["masked_image_latents"]], dim=1)

    def after_step(
        self, latents: torch.Tensor, step: int, timesteps: torch.Tensor, state: Any, tensors: dict[str, Any]
    ) -> torch.Tensor:
        if self.unet.config.in_channels != PLAIN_CHANNELS:
            return latents
        mask = tensors["mask"]
        mask = mask[mask.shape[0] // 2 :] if tensors["guidance_enabled"] else mask
        known = tensors["image_latents"]
        if step < len(timesteps) - 1:
            known = state.add_noise(known, tensors["noise"], timesteps[step + 1 : step + 2])
        return blend_known_region(latents, known, mask)

    def check_unet_channels(self, mask: torch.Tensor, masked_image_latents: torch.Tensor | None) -> None:
        channels = self.unet.config.in_channels
        if channels == INPAINT_CHANNELS:
            given = self.vae.config.latent_channels + mask.shape[1] + (
                masked_image_latents.shape[1] if masked_image_latents is not None else 0
            )
            if given != channels:
                raise ValueError(
                    f"the inpainting unet takes {channels} input channels but latents + mask + masked image latents "
                    f"give {given}; pass a 1-channel mask_image and a 3-channel image (or 4-channel latents)"
                )
        elif channels != PLAIN_CHANNELS:
            raise ValueError(
                f"{type(self).__name__} needs a unet with {PLAIN_CHANNELS} or {INPAINT_CHANNELS} input channels, "
                f"got in_channels={channels}"
            )

    def mask_latents(
        self,
        mask: torch.Tensor,
        masked_image: torch.Tensor | None,
        images_total: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        guidance_enabled: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The mask at latent resolution and the masked image's latents, each repeated per image and
        doubled for guidance."""
        factor = self.vae_scale_factor
        mask = torch.nn.functional.interpolate(mask, size=(height // factor, width // factor))
        mask = repeat_to_batch(mask.to(device=device, dtype=dtype), images_total, "mask_image")
        latents = None
        if masked_image is not None:
            if masked_image.shape[1] == self.vae.config.latent_channels:
                latents = masked_image
            else:
                latents = self.encode_images(masked_image.to(device=device, dtype=dtype), generator).to(dtype)
            latents = repeat_to_batch(latents, images_total, "masked_image_latents").to(device=device, dtype=dtype)
        if guidance_enabled:
            mask = torch.cat([mask, mask])
            latents = torch.cat([latents, latents]) if latents is not None else None
        return mask, latents

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        prompt_2: Prompt | None = None,
        image: ImageInput = None,
        mask_image: ImageInput = None,
        masked_image_latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        padding_mask_crop: int | None = None,
        strength: float = 0.9999,
        num_inference_steps: int = 50,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        denoising_start: float | None = None,
        denoising_end: float | None = None,
        guidance_scale: float = 7.5,
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
        """Inpaint ``image`` where ``mask_image`` is white (>= 0.5 after conversion to grayscale).

        Both are resized to ``height`` x ``width`` (default: the UNet's size). With
        ``padding_mask_crop=p`` only the box around the mask, grown by ``p`` pixels, is inpainted
        at that size and pasted back into the original (PIL in, ``output_type="pil"`` out).
        ``strength`` near 1
        starts the masked region from noise; lower keeps more of the original there.
        ``masked_image_latents`` replaces the encoded masked image. ``denoising_start`` /
        ``denoising_end``, the aesthetic scores and the rest are as in
        :class:`StableDiffusionXLImg2ImgPipeline`.
        """
        check_image_input(image, "image")
        check_image_input(mask_image, "mask_image")
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        self.check_strength_and_range(strength, denoising_start, denoising_end)
        batch = self.check_xl_prompt_inputs(
            prompt, prompt_2, negative_prompt, negative_prompt_2, prompt_embeds, negative_prompt_embeds,
            pooled_prompt_embeds, negative_pooled_prompt_embeds, num_images_per_prompt,
        )
        self.check_image_size(height, width)
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        check_mask_crop(padding_mask_crop, image, mask_image, output_type)
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
        state, run = self.plan_from(num_inference_steps, device, timesteps, sigmas, strength, denoising_start)
        images_total = batch * num_images_per_prompt
        dtype = prompt_embeds.dtype
        from_noise = strength == 1.0

        crops_coords, resize_mode = None, "default"
        if padding_mask_crop is not None:
            crops_coords = self.mask_processor.get_crop_region(mask_image, width, height, pad=padding_mask_crop)
            resize_mode = "fill"
        pixels = self.image_processor.preprocess(
            image, height=height, width=width, resize_mode=resize_mode, crops_coords=crops_coords
        ).to(torch.float32)
        mask = self.mask_processor.preprocess(
            mask_image, height=height, width=width, resize_mode=resize_mode, crops_coords=crops_coords
        )
        if masked_image_latents is not None:
            masked_image = masked_image_latents
        elif pixels.shape[1] == self.vae.config.latent_channels:
            masked_image = None
        else:
            masked_image = pixels * (mask < 0.5)

        plain_unet = self.unet.config.in_channels == PLAIN_CHANNELS
        image_latents = None
        if pixels.shape[1] == self.vae.config.latent_channels or plain_unet or (latents is None and not from_noise):
            image_latents = self.image_latents(
                pixels, images_total, dtype, device, generator, statistics=False, repeat_before_encoding=False
            )
        add_noise = denoising_start is None
        if latents is None and add_noise:
            noise = self.prepare_noise_latents(images_total, height, width, dtype, device, generator)
            if from_noise:
                latents = noise * state.init_noise_sigma
            else:
                latents = state.add_noise(image_latents, noise, run[:1].repeat(images_total))
        elif add_noise:
            noise = latents.to(device)
            latents = noise * state.init_noise_sigma
        else:
            noise = self.prepare_noise_latents(images_total, height, width, dtype, device, generator)
            latents = image_latents.to(device)

        mask, masked_latents = self.mask_latents(
            mask, masked_image, images_total, height, width, dtype, device, generator, guidance.enabled
        )
        self.check_unet_channels(mask, masked_latents)

        micro = dict(
            original_size=original_size, crops_coords_top_left=crops_coords_top_left, target_size=target_size,
            negative_original_size=negative_original_size,
            negative_crops_coords_top_left=negative_crops_coords_top_left, negative_target_size=negative_target_size,
            aesthetic_score=aesthetic_score, negative_aesthetic_score=negative_aesthetic_score,
        )
        tensors = self.image_conditioning(
            latents, pooled, negative_pooled, micro, images_total, guidance.enabled, device, dtype
        )
        tensors.update(
            mask=mask, masked_image_latents=masked_latents, image_latents=image_latents, noise=noise,
            guidance_enabled=guidance.enabled,
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
            extra_tensors=tensors,
        )
        images, _ = self.decode_latents_to_images(latents, output_type, device, dtype)
        if padding_mask_crop is not None:
            images = [self.image_processor.apply_overlay(mask_image, image, one, crops_coords) for one in images]
        return self.finish(images, return_dict)

"""``StableDiffusionInpaintPipeline``: repaint the masked part of an image with Stable Diffusion.

Two kinds of UNet: inpainting UNets (9 input channels: latents, the mask and the masked image's
latents, as in ``stable-diffusion-inpainting``) see the known region at every step; ordinary
4-channel UNets take the legacy path, where after every step the known region is replaced by the
original image's latents noised to the next timestep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from diffkit.randomness import randn_tensor
from diffkit.scheduler import SchedulerState
from diffkit_processors_image.image_processor import VaeImageProcessor

from .base import Generator, Prompt, StableDiffusionBase, StepCallback
from .image_conditioning import (
    check_generator_count,
    check_image_input,
    check_steps_left,
    check_strength,
    encode_with_vae,
    image_size,
    preprocess_input,
    repeat_to_batch,
    strength_timesteps,
)
from .outputs import StableDiffusionPipelineOutput

#: UNet input channels of the two paths: latents only (legacy), latents + mask + masked-image latents
LEGACY_CHANNELS, INPAINT_CHANNELS = 4, 9


def blend_known_region(latents: torch.Tensor, known: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # x = (1 - m) * known + m * x: keep the generated latents where the mask is 1, the known ones elsewhere
    return (1 - mask) * known + mask * latents


class StableDiffusionInpaintPipeline(StableDiffusionBase):
    """Fill the white part of ``mask_image`` in ``image`` following a prompt; the black part is kept.

    Components as :class:`StableDiffusionPipeline`; the UNet's ``in_channels`` picks the path
    (9: an inpainting UNet, 4: the legacy blend).
    """

    _callback_tensor_inputs = ("latents", "prompt_embeds", "negative_prompt_embeds", "mask", "masked_image_latents")

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

    @property
    def mask_processor(self) -> VaeImageProcessor:
        """Masks -> one grayscale channel of 0/1 at the image's size (not normalised)."""
        return VaeImageProcessor(
            vae_scale_factor=self.vae_scale_factor, do_normalize=False, do_binarize=True, do_convert_grayscale=True
        )

    def check_unet_channels(self) -> int:
        channels = self.unet.config.in_channels
        if channels not in (LEGACY_CHANNELS, INPAINT_CHANNELS):
            hint = " (an InstructPix2Pix UNet: use StableDiffusionInstructPix2PixPipeline)" if channels == 8 else ""
            raise ValueError(
                f"{type(self).__name__} needs a UNet with {INPAINT_CHANNELS} input channels (an inpainting UNet) "
                f"or {LEGACY_CHANNELS} (the legacy blend); this one has in_channels={channels}{hint}"
            )
        return channels

    # -- the loop's task hooks -----------------------------------------------------------
    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        if "masked_image_latents" not in tensors or self.unet.config.in_channels != INPAINT_CHANNELS:
            return model_input
        return torch.cat([model_input, tensors["mask"], tensors["masked_image_latents"]], dim=1)

    def after_step(
        self, latents: torch.Tensor, step: int, timesteps: torch.Tensor, state: SchedulerState, tensors: dict[str, Any]
    ) -> torch.Tensor:
        known = tensors.get("_image_latents")
        if known is None:
            return latents
        mask = tensors["mask"]
        if mask.shape[0] != latents.shape[0]:  # the guidance batch holds the mask twice
            mask = mask.chunk(2)[0]
        if step < len(timesteps) - 1:
            known = state.add_noise(known, tensors["_noise"], timesteps[step + 1 : step + 2])
        return blend_known_region(latents, known, mask)

    # -- preparation ---------------------------------------------------------------------
    def prepare_inpaint_latents(
        self,
        batch_size: int,
        num_channels_latents: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        latents: torch.Tensor | None,
        state: SchedulerState,
        pixels: torch.Tensor,
        timestep: torch.Tensor,
        is_strength_max: bool,
        need_image_latents: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``(latents, noise, image_latents)``: pure noise at strength 1, else the image's latents noised to
        ``timestep``; ``image_latents`` when the legacy path or the noising needs them (drawn first)."""
        factor = self.vae_scale_factor
        shape = (batch_size, num_channels_latents, int(height) // factor, int(width) // factor)
        check_generator_count(generator, batch_size)
        image_latents = None
        if need_image_latents or (latents is None and not is_strength_max):
            pixels = pixels.to(device=device, dtype=dtype)
            encoded = pixels if pixels.shape[1] == num_channels_latents else encode_with_vae(self.vae, pixels, generator)
            image_latents = encoded.repeat(batch_size // encoded.shape[0], 1, 1, 1)
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must have shape {shape} for this call, got {tuple(latents.shape)}")
            noise = latents.to(device)
            return noise * state.init_noise_sigma, noise, image_latents
        noise = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        if is_strength_max:
            return noise * state.init_noise_sigma, noise, image_latents
        return state.add_noise(image_latents, noise, timestep), noise, image_latents

    def prepare_mask_latents(
        self,
        mask: torch.Tensor,
        masked_image: torch.Tensor,
        batch_size: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        doubled: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask at latent resolution and the masked image's latents, tiled to the batch (twice with guidance)."""
        factor = self.vae_scale_factor
        mask = torch.nn.functional.interpolate(mask, size=(height // factor, width // factor))
        mask = mask.to(device=device, dtype=dtype)
        masked_image = masked_image.to(device=device, dtype=dtype)
        if masked_image.shape[1] == self.vae.config.latent_channels:
            masked_latents = masked_image
        else:
            masked_latents = encode_with_vae(self.vae, masked_image, generator)
        mask = repeat_to_batch(mask, batch_size, "mask_image")
        masked_latents = repeat_to_batch(masked_latents, batch_size, "masked_image_latents (or image)")
        if doubled:
            mask, masked_latents = torch.cat([mask, mask]), torch.cat([masked_latents, masked_latents])
        return mask, masked_latents.to(device=device, dtype=dtype)

    def check_inpaint_inputs(
        self, image: Any, mask_image: Any, masked_image_latents: Any, padding_mask_crop: int | None, output_type: str
    ) -> None:
        check_image_input(image, "image")
        check_image_input(mask_image, "mask_image")
        if masked_image_latents is not None and not isinstance(masked_image_latents, torch.Tensor):
            raise TypeError(
                f"masked_image_latents must be a torch tensor (latents, or masked pixels), got "
                f"{type(masked_image_latents).__name__}"
            )
        if masked_image_latents is not None:
            latent = self.vae.config.latent_channels
            if masked_image_latents.ndim != 4 or masked_image_latents.shape[1] not in (latent, 3):
                raise ValueError(
                    f"masked_image_latents must have shape (batch, {latent}, height / {self.vae_scale_factor}, "
                    f"width / {self.vae_scale_factor}) (or masked pixels with 3 channels), got "
                    f"{tuple(masked_image_latents.shape)}"
                )
        if padding_mask_crop is not None:
            for name, value in (("image", image), ("mask_image", mask_image)):
                if not isinstance(value, PIL.Image.Image):
                    raise ValueError(
                        f"padding_mask_crop needs {name} as one PIL image, got {type(value).__name__}"
                    )
            if output_type != "pil":
                raise ValueError(f"padding_mask_crop pastes the result into the PIL image: output_type must be 'pil', "
                                 f"got {output_type!r}")
        is_latents = isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == self.vae.config.latent_channels
        if not is_latents and image_size(image) != image_size(mask_image):
            (ih, iw), (mh, mw) = image_size(image), image_size(mask_image)
            raise ValueError(
                f"mask_image is {mh}x{mw} pixels but image is {ih}x{iw} (height x width); diffusers would resize "
                "each to the output size on its own, so a mask of another shape lands on the wrong pixels. Resize "
                "the mask to the image's size first"
            )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        mask_image: Any = None,
        masked_image_latents: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        padding_mask_crop: int | None = None,
        strength: float = 1.0,
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
        clip_skip: int | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Inpaint ``image`` where ``mask_image`` is white (>= 0.5), guided by ``prompt``.

        ``image``/``mask_image``: PIL, numpy or tensors (masks may be ``HW``, ``NHW``, ``N1HW``)
        of the same size; both are resized to ``height x width`` (the UNet's size by default).
        ``masked_image_latents`` replaces the masked image the 9-channel UNet sees. ``strength``
        < 1 starts from the noised image instead of pure noise. ``padding_mask_crop=p``
        inpaints only the box around the mask (padded by ``p`` pixels) at full resolution and
        pastes it back into the original (PIL in, PIL out). Other arguments as
        :class:`StableDiffusionPipeline`.
        """
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        check_strength(strength)
        self.check_image_size(height, width)
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        self.check_inpaint_inputs(image, mask_image, masked_image_latents, padding_mask_crop, output_type)
        unet_channels = self.check_unet_channels()
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
        state = self.plan_schedule(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
        planned = state.num_inference_steps if state.num_inference_steps is not None else num_inference_steps
        run, steps = strength_timesteps(state, planned, strength, self.scheduler.order)
        check_steps_left(steps, strength, planned)
        images_total = batch * num_images_per_prompt

        if padding_mask_crop is not None:
            crops_coords = self.mask_processor.get_crop_region(mask_image, width, height, pad=padding_mask_crop)
            resize_mode = "fill"
        else:
            crops_coords, resize_mode = None, "default"
        pixels = preprocess_input(
            self.image_processor, image, "image", height=height, width=width, crops_coords=crops_coords,
            resize_mode=resize_mode,
        ).to(dtype=torch.float32)
        dtype = prompt_embeds.dtype
        latents, noise, image_latents = self.prepare_inpaint_latents(
            images_total,
            self.vae.config.latent_channels,
            height,
            width,
            dtype,
            device,
            generator,
            latents,
            state,
            pixels,
            run[:1].repeat(images_total),
            strength == 1.0,
            unet_channels == LEGACY_CHANNELS,
        )
        mask_condition = preprocess_input(
            self.mask_processor, mask_image, "mask_image", height=height, width=width, resize_mode=resize_mode,
            crops_coords=crops_coords,
        )
        masked = pixels * (mask_condition < 0.5) if masked_image_latents is None else masked_image_latents
        mask, masked_latents = self.prepare_mask_latents(
            mask_condition, masked, images_total, height, width, dtype, device, generator, guidance.enabled
        )
        if masked_latents.shape[-2:] != latents.shape[-2:]:
            raise ValueError(
                f"masked_image_latents are {tuple(masked_latents.shape[-2:])} latents but this call makes "
                f"{tuple(latents.shape[-2:])} (height / {self.vae_scale_factor} x width / {self.vae_scale_factor})"
            )
        if unet_channels == INPAINT_CHANNELS:
            given = latents.shape[1] + mask.shape[1] + masked_latents.shape[1]
            if given != INPAINT_CHANNELS:
                raise ValueError(
                    f"the inpainting UNet takes {INPAINT_CHANNELS} input channels but latents ({latents.shape[1]}) + "
                    f"mask ({mask.shape[1]}) + masked image latents ({masked_latents.shape[1]}) make {given}; "
                    "pass a single-channel mask and masked_image_latents with the VAE's latent channels"
                )
        extra: dict[str, Any] = {"mask": mask, "masked_image_latents": masked_latents}
        if unet_channels == LEGACY_CHANNELS:
            extra.update(_image_latents=image_latents, _noise=noise)
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
            extra_tensors=extra,
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, dtype)
        if padding_mask_crop is not None:
            images = [self.image_processor.apply_overlay(mask_image, image, i, crops_coords) for i in images]
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

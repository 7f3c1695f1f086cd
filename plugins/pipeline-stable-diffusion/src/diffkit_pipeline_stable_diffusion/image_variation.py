"""``StableDiffusionImageVariationPipeline``: variations of an image, conditioned on its CLIP image embedding.

The UNet attends to one token, the projected CLIP image embedding of the input image
(``CLIPVisionModelWithProjection``), instead of text; the unconditional branch of guidance
attends to a zero embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import PIL.Image
import torch

from diffkit.pipeline import Pipeline

from .base import Generator, StableDiffusionBase, StepCallback, logger
from .outputs import StableDiffusionPipelineOutput


def check_variation_image(image: Any) -> int:
    """``image``: a PIL image, an ``NCHW`` tensor (CLIP pixel values) or a non-empty list; returns the batch."""
    if isinstance(image, PIL.Image.Image):
        return 1
    if isinstance(image, torch.Tensor):
        if image.ndim != 4:
            raise ValueError(
                f"image as a tensor must be CLIP pixel values (batch, 3, height, width), got shape {tuple(image.shape)}"
            )
        return image.shape[0]
    if isinstance(image, (list, tuple)) and image:
        return len(image)
    raise TypeError(
        f"image must be a PIL image, a list of images, or a tensor of CLIP pixel values, got {type(image).__name__}"
        + (" (empty)" if isinstance(image, (list, tuple)) else "")
        + "; load files with PIL.Image.open first"
    )


def check_image_encoder_fits_unet(image_encoder: Any, unet: Any) -> None:
    """The image encoder's ``projection_dim`` must be the UNet's ``cross_attention_dim`` (what it attends to)."""
    width = getattr(getattr(image_encoder, "config", None), "projection_dim", None)
    dims = getattr(getattr(unet, "config", None), "cross_attention_dim", None)
    dims = set(dims) if isinstance(dims, (list, tuple)) else {dims}
    if width is None or None in dims or dims == {width}:
        return
    raise ValueError(
        f"image_encoder ({type(image_encoder).__name__}) has projection_dim={width} but unet has "
        f"cross_attention_dim={sorted(dims)[0] if len(dims) == 1 else sorted(dims)}: the UNet cannot attend to "
        "these image embeddings; load the image encoder and UNet from the same checkpoint"
    )


class StableDiffusionImageVariationPipeline(StableDiffusionBase):
    """Generate images like ``image``: its CLIP image embedding takes the place of the prompt.

    ``feature_extractor`` (a ``CLIPImageProcessor``) prepares the image for ``image_encoder``
    and the generated images for the optional ``safety_checker``.
    """

    optional_components = ("safety_checker",)
    model_cpu_offload_seq = "image_encoder->unet->vae"
    _callback_tensor_inputs = ("latents",)

    def __init__(
        self,
        vae: Any,
        image_encoder: Any,
        unet: Any,
        scheduler: Any,
        safety_checker: Any,
        feature_extractor: Any,
        requires_safety_checker: bool = True,
    ) -> None:
        if safety_checker is None and requires_safety_checker:
            logger.warning(
                "%s runs without a safety checker (safety_checker=None): its images are not screened; "
                "pass requires_safety_checker=False to silence this", type(self).__name__,
            )
        if safety_checker is not None and feature_extractor is None:
            raise ValueError(
                f"{type(self).__name__}: safety_checker needs a feature_extractor to prepare its input; "
                "pass one (a CLIPImageProcessor), or pass safety_checker=None"
            )
        check_image_encoder_fits_unet(image_encoder, unet)
        Pipeline.__init__(
            self,
            vae=vae,
            image_encoder=image_encoder,
            unet=unet,
            scheduler=scheduler,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
            requires_safety_checker=requires_safety_checker,
        )

    def encode_image(
        self, image: Any, device: torch.device, num_images_per_prompt: int, guidance_enabled: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image(s) -> ``(embeddings, zeros)`` of shape ``(batch * num_images_per_prompt, 1, projection_dim)``.

        A tensor is taken as ready CLIP pixel values; anything else goes through ``feature_extractor``.
        The second item (``None`` without guidance) is what the unconditional branch attends to.
        """
        dtype = next(self.image_encoder.parameters()).dtype
        if not isinstance(image, torch.Tensor):
            image = self.feature_extractor(images=image, return_tensors="pt").pixel_values
        embeds = self.image_encoder(image.to(device=device, dtype=dtype)).image_embeds.unsqueeze(1)
        if num_images_per_prompt > 1:
            embeds = embeds.repeat_interleave(num_images_per_prompt, dim=0)
        return embeds, (torch.zeros_like(embeds) if guidance_enabled else None)

    @torch.inference_mode()
    def __call__(
        self,
        image: Any,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: Generator | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> StableDiffusionPipelineOutput | tuple[Any, list[bool] | None]:
        """Generate ``num_images_per_prompt`` variations of each image.

        ``image``: a PIL image or a list of them, or a tensor of CLIP pixel values. ``guidance_scale``
        > 1 pushes away from the zero embedding. Other arguments as :class:`StableDiffusionPipeline`.
        """
        batch = check_variation_image(image)
        default_height, default_width = self.default_size()
        height, width = height or default_height, width or default_width
        self.check_image_size(height, width)
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}")
        self.check_output_type(output_type)
        self.check_callback_inputs(callback_on_step_end_tensor_inputs)
        device = self._execution_device
        guidance = self.guidance(guidance_scale)

        embeds, zeros = self.encode_image(image, device, num_images_per_prompt, guidance.enabled)
        state = self.plan_schedule(num_inference_steps, device)
        latents = self.prepare_latents(
            batch * num_images_per_prompt,
            self.unet.config.in_channels,
            height,
            width,
            embeds.dtype,
            device,
            generator,
            latents,
            state.init_noise_sigma,
        )
        latents = self.denoise(
            state,
            latents,
            embeds,
            zeros,
            guidance,
            self.step_options(state, eta, generator),
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        images, flagged = self.decode_latents_to_images(latents, output_type, device, embeds.dtype)
        self.maybe_free_model_hooks()
        if not return_dict:
            return images, flagged
        return StableDiffusionPipelineOutput(images=images, nsfw_content_detected=flagged)

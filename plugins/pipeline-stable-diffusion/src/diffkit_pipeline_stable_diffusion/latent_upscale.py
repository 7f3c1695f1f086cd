"""``StableDiffusionLatentUpscalePipeline``: 2x upscaling of Stable Diffusion latents (sd-x2-latent-upscaler).

A k-diffusion model run through an Euler scheduler: the UNet sees ``c_in x`` with the
nearest-upsampled low-resolution latents, the timestep ``c_noise = ln(sigma) / 4``, and a
``timestep_cond`` made of a noise-level embedding and the text encoder's pooled output; its
output is turned into a denoised sample with Karras et al.'s (2022, table 1) ``c_skip``/``c_out``
before guidance and the scheduler step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline
from diffkit_processors_image.image_processor import VaeImageProcessor

from .base import Generator, Guidance, Prompt, StableDiffusionBase, _negative_texts, initial_noise
from .image_conditioning import encode_with_vae

#: width of each half (ones, zeros) of the noise-level embedding in ``timestep_cond``
NOISE_LEVEL_EMBED_HALF = 64


def noise_level_condition(pooled: torch.Tensor) -> torch.Tensor:
    """``timestep_cond``: ``[1 x 64, 0 x 64, pooled text]`` per sample (the noise level is fixed at 0)."""
    rows = pooled.shape[0]
    ones = torch.ones(rows, NOISE_LEVEL_EMBED_HALF, dtype=pooled.dtype, device=pooled.device)
    zeros = torch.zeros(rows, NOISE_LEVEL_EMBED_HALF, dtype=pooled.dtype, device=pooled.device)
    return torch.cat([torch.cat([ones, zeros], dim=1), pooled], dim=1)


def low_res_condition(latents: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
    """The low-resolution latents upsampled 2x (nearest), scaled by ``1 / sqrt(noise_level^2 + 1)``."""
    # c = up2(z) * (s^2 + 1)^-1/2
    scale = (noise_level**2 + 1) ** (-0.5)
    return torch.nn.functional.interpolate(latents, scale_factor=2, mode="nearest") * scale[:, None, None, None]


def karras_denoised(
    output: torch.Tensor, sample: torch.Tensor, sigma: torch.Tensor, c_out: torch.Tensor
) -> torch.Tensor:
    """The model's denoised sample: ``c_skip x + c_out F`` with ``c_skip = 1 / (sigma^2 + 1)``."""
    return 1 / (sigma**2 + 1) * sample + c_out * output


class StableDiffusionLatentUpscalePipeline(StableDiffusionBase):
    """Upscale images or Stable Diffusion latents 2x, guided by a prompt.

    ``image``: latents with the VAE's channel count (e.g. a text-to-image call's
    ``output_type="latent"``), or pixels (PIL, numpy, tensors in [-1, 1] or [0, 1]) that the
    VAE encodes first. The scheduler must be an ``EulerDiscreteScheduler`` configured as the
    checkpoint's (``prediction_type="sample"``): the pipeline converts the UNet's output into a
    denoised sample itself. ``guidance_scale=0`` conditions on the empty prompt.
    """

    optional_components = ()
    _callback_tensor_inputs = ("latents",)

    def __init__(self, vae: Any, text_encoder: Any, tokenizer: Any, unet: Any, scheduler: Any) -> None:
        Pipeline.__init__(self, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)

    @property
    def image_processor(self) -> VaeImageProcessor:
        return VaeImageProcessor(vae_scale_factor=self.vae_scale_factor, resample="bicubic")

    def encode_prompt_pooled(
        self,
        prompt: Prompt | None,
        device: torch.device,
        guidance_enabled: bool,
        negative_prompt: Prompt | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """``(embeds, negative, pooled, negative pooled)``: the last hidden states and the pooled output.

        The negatives are ``None`` without guidance; with it, a missing negative prompt is ``""``.
        """
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        if prompt_embeds is None or pooled_prompt_embeds is None:
            texts = [prompt] if isinstance(prompt, str) else list(prompt)
            self._warn_truncated(texts)
            tokens = self._tokenize(texts, self.tokenizer.model_max_length)
            prompt_embeds, pooled_prompt_embeds = self._hidden_and_pooled(tokens.input_ids, device)
        if not guidance_enabled:
            return prompt_embeds, None, pooled_prompt_embeds, None
        if negative_prompt_embeds is None or negative_pooled_prompt_embeds is None:
            tokens = self._tokenize(_negative_texts(negative_prompt, batch), prompt_embeds.shape[1])
            negative_prompt_embeds, negative_pooled_prompt_embeds = self._hidden_and_pooled(tokens.input_ids, device)
        return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds

    def _hidden_and_pooled(self, input_ids: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.text_encoder(input_ids.to(device), output_hidden_states=True)
        return output.hidden_states[-1], output.pooler_output

    def check_latent_upscale_inputs(
        self,
        image: Any,
        batch: int,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
    ) -> None:
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError(
                "prompt_embeds needs pooled_prompt_embeds too (the text encoder's pooled output for the same prompts)"
            )
        if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds needs negative_pooled_prompt_embeds too")
        if image is None:
            raise ValueError("image is required: pass latents, a PIL image, a numpy array or a torch tensor")
        if not isinstance(image, (torch.Tensor, np.ndarray, PIL.Image.Image, list)):
            raise TypeError(
                f"image must be a torch tensor, numpy array, PIL image or a list of them, got {type(image).__name__}"
            )
        if isinstance(image, (list, torch.Tensor)):
            images = len(image) if isinstance(image, list) else (image.shape[0] if image.ndim == 4 else 1)
            if images != batch:
                raise ValueError(
                    f"prompt has batch size {batch} but image has batch size {images}; pass one image per prompt"
                )

    def check_unet_channels(self, image_channels: int) -> None:
        latent_channels = self.vae.config.latent_channels
        if latent_channels + image_channels != self.unet.config.in_channels:
            raise ValueError(
                f"unet takes in_channels={self.unet.config.in_channels} but the latent upscaler feeds it "
                f"{latent_channels} latent + {image_channels} conditioning channels; load the latent upscaler's UNet"
            )

    @torch.inference_mode()
    def __call__(
        self,
        prompt: Prompt | None = None,
        image: Any = None,
        num_inference_steps: int = 75,
        guidance_scale: float = 9.0,
        negative_prompt: Prompt | None = None,
        generator: Generator | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> ImagePipelineOutput | tuple[Any]:
        """Upscale ``image`` (one per prompt) 2x.

        ``pooled_prompt_embeds`` must come with ``prompt_embeds`` (and the negative ones
        likewise). Returns an ``ImagePipelineOutput``, or ``(images,)`` with ``return_dict=False``.
        """
        batch = self.check_prompt_inputs(prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, 1)
        self.check_latent_upscale_inputs(
            image, batch, prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds
        )
        self.check_output_type(output_type)
        device = self._execution_device
        # the UNet's timestep_cond carries the noise level, not the guidance scale: guidance stays on
        guidance = Guidance(guidance_scale, 0.0, guidance_scale > 1.0)
        if guidance_scale == 0:
            prompt = [""] * batch

        embeds, negative, pooled, negative_pooled = self.encode_prompt_pooled(
            prompt, device, guidance.enabled, negative_prompt,
            prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds,
        )
        embeds = guidance.batch_embeddings(embeds, negative)
        pooled = guidance.batch_embeddings(pooled, negative_pooled)

        low_res = self.image_processor.preprocess(image).to(dtype=embeds.dtype, device=device)
        if low_res.shape[1] == 3:
            low_res = encode_with_vae(self.vae, low_res, generator)
        state = self.plan_schedule(num_inference_steps, device)
        low_res = guidance.batch_latents(low_res[None] if low_res.ndim == 3 else low_res)
        noise_level = torch.zeros(low_res.shape[0], dtype=torch.float32, device=device)
        condition = low_res_condition(low_res, noise_level).to(embeds.dtype)
        timestep_cond = noise_level_condition(pooled)

        height, width = low_res.shape[2:]
        shape = (batch, self.vae.config.latent_channels, height * 2, width * 2)
        latents = initial_noise(shape, generator, device, embeds.dtype, latents) * state.init_noise_sigma
        self.check_unet_channels(condition.shape[1])

        for i, t in enumerate(self.progress_bar(state.timesteps)):
            sigma = state.sigmas[i].to(device)
            model_input = guidance.batch_latents(latents)
            scaled = torch.cat([state.scale_model_input(model_input, t), condition], dim=1)
            output = self.unet(
                scaled, torch.log(sigma) * 0.25, encoder_hidden_states=embeds, timestep_cond=timestep_cond
            ).sample[:, :-1]  # the last channel is a variance the sampler does not use
            denoised = karras_denoised(output, model_input, sigma, state.scale_model_input(sigma, t))
            latents = state.step(guidance.combine(denoised), t, latents, return_dict=False)[0]

        if output_type == "latent":
            images = latents
        else:
            decoded = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
            images = self.image_processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)

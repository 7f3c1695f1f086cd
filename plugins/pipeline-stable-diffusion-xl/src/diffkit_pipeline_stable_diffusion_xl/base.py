"""``StableDiffusionXLBase``: what SDXL changes on the Stable Diffusion family base, written once for its tasks.

Two CLIP text encoders whose penultimate hidden states are concatenated, the pooled embedding
of the second (``CLIPTextModelWithProjection``), zero negatives for an empty negative prompt
(``force_zeros_for_empty_prompt``), the micro-conditioning time ids handed to the UNet with
the pooled embedding (``added_cond_kwargs``), the ``denoising_end``/``denoising_start``
hand-over between base and refiner, the VAE in float32 where a float16 one would overflow
(``force_upcast``), the SDXL latent statistics (``latents_mean``/``latents_std``) and the
optional watermark. Guidance, the sampling loop, latent noise and the scheduler plan are the
family base's. Nothing a call computes is stored on ``self``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit.scheduler import SchedulerState
from diffkit_loader_transformers.clip import text_tower
from diffkit_pipeline_stable_diffusion.base import (
    Generator,
    Prompt,
    StableDiffusionBase,
    _negative_texts,
    _repeat_per_image,
)
from diffkit_pipeline_stable_diffusion.image_conditioning import check_generator_count, encode_with_vae, repeat_to_batch

from .micro_conditioning import (
    aesthetic_time_ids,
    check_time_ids_width,
    is_fraction,
    size_time_ids,
    steps_before_end,
)
from .outputs import StableDiffusionXLPipelineOutput
from .watermark import make_watermarker

logger = logging.getLogger("diffkit.pipeline.stable_diffusion_xl")

Size = tuple[int, int]


def check_encoders_fit_unet(text_encoders: Sequence[Any], unet: Any) -> None:
    """The concatenated hidden sizes of the text encoders must be the UNet's ``cross_attention_dim``."""
    present = [e for e in text_encoders if e is not None]
    if not present or unet is None:
        return
    widths = [getattr(getattr(e, "config", None), "hidden_size", None) for e in present]
    dims = unet.config.cross_attention_dim
    dims = set(dims) if isinstance(dims, (list, tuple)) else {dims}
    if None in widths or len(dims) != 1:
        return
    expected = dims.pop()
    if sum(widths) != expected:
        raise ValueError(
            f"text encoders with hidden sizes {widths} give {sum(widths)}-wide prompt embeddings but the unet "
            f"has cross_attention_dim={expected}: load the text encoders and UNet from the same SDXL checkpoint"
        )


#: AutoencoderKL settings that are attributes, not config: how it slices and tiles
_VAE_SWITCHES = ("use_slicing", "use_tiling", "tile_sample_min_size", "tile_latent_min_size", "tile_overlap_factor")


def upcast_copy(vae: torch.nn.Module, device: torch.device, backend: Any = None) -> torch.nn.Module:
    """A float32 copy of ``vae`` on ``device``, built from its config and weights.

    The shared VAE stays as it is (concurrent calls are unaffected), and no module object is
    copied, so offload hooks on it do not travel. ``backend``: the pipeline's attention backend.
    """
    with torch.device("meta"):
        upcast = type(vae)(vae.config)
    weights = {name: t.to(device=device, dtype=torch.float32) for name, t in vae.state_dict().items()}
    upcast.load_state_dict(weights, assign=True)
    for name in _VAE_SWITCHES:
        if hasattr(vae, name):
            setattr(upcast, name, getattr(vae, name))
    if backend is not None:
        upcast.set_attention_backend(backend)
    return upcast.eval()


def unscale_latents(latents: torch.Tensor, config: Any) -> torch.Tensor:
    """Diffusion latents -> what the VAE decodes: ``z * std / scaling_factor + mean`` with SDXL statistics."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        shape = (1, len(mean), 1, 1)
        mean = torch.tensor(mean).view(shape).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(shape).to(latents.device, latents.dtype)
        return latents * std / config.scaling_factor + mean
    return latents / config.scaling_factor


def standardize_latents(scaled: torch.Tensor, config: Any) -> torch.Tensor:
    """``scaling_factor * z`` -> ``(z - mean) * scaling_factor / std`` where the VAE has SDXL statistics."""
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is None or std is None:
        return scaled
    shape = (1, len(mean), 1, 1)
    mean = torch.tensor(mean).view(shape).to(scaled.device, scaled.dtype)
    std = torch.tensor(std).view(shape).to(scaled.device, scaled.dtype)
    # (z - mean) * sf / std = (sf z - sf mean) / std
    return (scaled - config.scaling_factor * mean) / std


def _as_list(prompt: Prompt) -> list[str]:
    return [prompt] if isinstance(prompt, str) else list(prompt)


class StableDiffusionXLBase(StableDiffusionBase):
    """Base of the SDXL pipelines: shared steps, no ``__call__`` of its own."""

    optional_components = (
        "tokenizer", "tokenizer_2", "text_encoder", "text_encoder_2", "image_encoder", "feature_extractor",
    )
    model_cpu_offload_seq = "text_encoder->text_encoder_2->image_encoder->unet->vae"
    _callback_tensor_inputs = ("latents", "prompt_embeds", "add_text_embeds", "add_time_ids")

    def _init_xl(self, add_watermarker: bool | None, **components: Any) -> None:
        """Check the components, construct, and set up the watermark (for the tasks' ``__init__``)."""
        check_encoders_fit_unet(
            [components.get("text_encoder"), components.get("text_encoder_2")], components.get("unet")
        )
        if add_watermarker is not None:
            components["add_watermarker"] = add_watermarker
        Pipeline.__init__(self, **components)  # not _init_family: XL has no safety checker, no legacy scheduler fixes
        object.__setattr__(self, "watermark", make_watermarker(add_watermarker, type(self).__name__))

    @property
    def force_zeros_for_empty_prompt(self) -> bool:
        return bool(self._settings.get("force_zeros_for_empty_prompt", True))

    # -- prompt encoding -----------------------------------------------------------------
    def _text_encoders(self) -> list[tuple[Any, Any]]:
        """``(tokenizer, text_encoder)`` pairs in order; the refiner has only the second."""
        pairs = [(self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)]
        if self.text_encoder is None:
            pairs = pairs[1:]
        return [(t, e) for t, e in pairs if e is not None]

    def _encode_texts(
        self,
        texts: Sequence[list[str]],
        device: torch.device,
        clip_skip: int | None,
        max_length: int | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Each encoder's hidden states ``clip_skip + 1`` layers before the last, concatenated, and the
        first pooled (projected) embedding among them. Encoder ``i`` reads ``texts[i]``."""
        per_encoder, pooled = [], None
        for batch, (tokenizer, encoder) in zip(texts, self._text_encoders(), strict=False):
            if max_length is None:
                self._warn_truncated(batch, tokenizer)
            tokens = self._tokenize(batch, max_length or tokenizer.model_max_length, tokenizer)
            output = encoder(tokens.input_ids.to(device), output_hidden_states=True)
            if pooled is None and output[0].ndim == 2:
                pooled = output[0]
            per_encoder.append(output.hidden_states[-(_skipped_layers(encoder, clip_skip) + 2)])
        return torch.cat(per_encoder, dim=-1), pooled

    def encode_prompt(
        self,
        prompt: Prompt | None,
        prompt_2: Prompt | None = None,
        device: torch.device | str | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: Prompt | None = None,
        negative_prompt_2: Prompt | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        """Text -> ``(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)``.

        diffusers' signature and result. ``prompt_2``/``negative_prompt_2`` go to the second
        encoder (default: ``prompt``/``negative_prompt``). Every tensor is repeated
        ``num_images_per_prompt`` times, each prompt's copies adjacent; the negatives are
        ``None`` without guidance, and zeros when no negative prompt is given and
        ``force_zeros_for_empty_prompt`` is set. ``clip_skip=k`` takes each encoder's hidden
        states ``k`` layers before the penultimate one SDXL uses. ``lora_scale`` has nothing to
        scale (diffkit loads no LoRA layers).
        """
        del lora_scale
        device = torch.device(device) if device is not None else self._execution_device
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        if prompt_embeds is None:
            if not self._text_encoders():
                raise ValueError(
                    f"{type(self).__name__} has no text encoder: pass prompt_embeds and pooled_prompt_embeds"
                )
            texts = [_as_list(prompt), _as_list(prompt_2 or prompt)]
            prompt_embeds, pooled = self._encode_texts(texts, device, clip_skip, None)
            pooled_prompt_embeds = pooled if pooled_prompt_embeds is None else pooled_prompt_embeds
        if pooled_prompt_embeds is None:
            raise ValueError(
                "pooled_prompt_embeds is needed: pass it with prompt_embeds (the text_embeds of text_encoder_2), "
                "or pass prompt and a text_encoder_2 that projects (CLIPTextModelWithProjection)"
            )

        if do_classifier_free_guidance and negative_prompt_embeds is None:
            if negative_prompt is None and self.force_zeros_for_empty_prompt:
                negative_prompt_embeds = torch.zeros_like(prompt_embeds)
                negative_pooled_prompt_embeds = torch.zeros_like(pooled_prompt_embeds)
            else:
                negative = negative_prompt or ""
                negatives = [_negative_texts(negative, batch), _negative_texts(negative_prompt_2 or negative, batch)]
                negative_prompt_embeds, pooled = self._encode_texts(negatives, device, None, prompt_embeds.shape[1])
                if negative_pooled_prompt_embeds is None:
                    negative_pooled_prompt_embeds = pooled

        dtype = self.text_encoder_2.dtype if self.text_encoder_2 is not None else self.unet.dtype
        prompt_embeds = _repeat_per_image(prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)
        pooled_prompt_embeds = _repeat_per_image(pooled_prompt_embeds, num_images_per_prompt)
        if not do_classifier_free_guidance:
            return prompt_embeds, None, pooled_prompt_embeds, None
        if negative_pooled_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds needs negative_pooled_prompt_embeds beside it")
        negative_prompt_embeds = _repeat_per_image(
            negative_prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt
        )
        negative_pooled_prompt_embeds = _repeat_per_image(negative_pooled_prompt_embeds, num_images_per_prompt)
        return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds

    def check_xl_prompt_inputs(
        self,
        prompt: Prompt | None,
        prompt_2: Prompt | None,
        negative_prompt: Prompt | None,
        negative_prompt_2: Prompt | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
    ) -> int:
        """The family's prompt checks plus the second prompts and the pooled embeddings; returns the prompt count."""
        batch = self.check_prompt_inputs(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt
        )
        for name, value, embeds_name, embeds in (
            ("prompt_2", prompt_2, "prompt_embeds", prompt_embeds),
            ("negative_prompt_2", negative_prompt_2, "negative_prompt_embeds", negative_prompt_embeds),
        ):
            if value is not None and embeds is not None:
                raise ValueError(f"pass at most one of {name} and {embeds_name}")
            if value is not None and not (
                isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
            ):
                raise ValueError(f"{name} must be a string or a list of strings, got {type(value).__name__}")
        if prompt_embeds is not None and pooled_prompt_embeds is None:
            raise ValueError("prompt_embeds needs pooled_prompt_embeds (from text_encoder_2) beside it")
        if negative_prompt_embeds is not None and negative_pooled_prompt_embeds is None:
            raise ValueError("negative_prompt_embeds needs negative_pooled_prompt_embeds beside it")
        return batch

    # -- micro-conditioning ----------------------------------------------------------------
    def _projection_dim(self, pooled: torch.Tensor) -> int:
        encoder = self.text_encoder_2
        return int(encoder.config.projection_dim) if encoder is not None else int(pooled.shape[-1])

    def time_ids(
        self,
        original_size: Sequence[int],
        crops_coords_top_left: Sequence[int],
        target_size: Sequence[int],
        dtype: torch.dtype,
        pooled: torch.Tensor,
        aesthetic_score: float | None = None,
        aesthetics: bool | None = None,
    ) -> torch.Tensor:
        """The ``(1, n)`` time ids of one branch: sizes and crop, with the aesthetic score in place of
        the target size when ``aesthetics`` (the refiner's ``requires_aesthetics_score``)."""
        if aesthetics:
            ids = aesthetic_time_ids(original_size, crops_coords_top_left, aesthetic_score)
        else:
            ids = size_time_ids(original_size, crops_coords_top_left, target_size)
        config = self.unet.config
        check_time_ids_width(
            len(ids), config.addition_time_embed_dim, self._projection_dim(pooled),
            config.projection_class_embeddings_input_dim, aesthetics,
        )
        return torch.tensor([ids], dtype=dtype)

    def added_conditioning(
        self,
        pooled: torch.Tensor,
        negative_pooled: torch.Tensor | None,
        time_ids: torch.Tensor,
        negative_time_ids: torch.Tensor,
        images: int,
        guidance_enabled: bool,
        device: torch.device,
    ) -> dict[str, torch.Tensor]:
        """``add_text_embeds`` and ``add_time_ids`` for the UNet's batch (negative first with guidance)."""
        time_ids = time_ids.repeat(images, 1)
        if guidance_enabled:
            pooled = torch.cat([negative_pooled, pooled])
            time_ids = torch.cat([negative_time_ids.repeat(images, 1), time_ids])
        return {"add_text_embeds": pooled.to(device), "add_time_ids": time_ids.to(device)}

    def unet_conditioning(self, tensors: dict[str, Any]) -> dict[str, Any]:
        return {"added_cond_kwargs": {"text_embeds": tensors["add_text_embeds"], "time_ids": tensors["add_time_ids"]}}

    # -- schedule --------------------------------------------------------------------------
    def end_early(self, timesteps: torch.Tensor, denoising_end: float | None) -> torch.Tensor:
        """The timesteps a base model runs with ``denoising_end`` (all of them unless it is in (0, 1))."""
        if not is_fraction(denoising_end):
            return timesteps
        return timesteps[: steps_before_end(timesteps, denoising_end, self.scheduler.config.num_train_timesteps)]

    def plan_call(
        self,
        num_inference_steps: int,
        device: torch.device,
        timesteps: Sequence[int] | None,
        sigmas: Sequence[float] | None,
    ) -> tuple[SchedulerState, int]:
        """The scheduler plan and diffusers' step count (the custom list's length where one is given)."""
        state = self.plan_schedule(num_inference_steps, device, timesteps=timesteps, sigmas=sigmas)
        custom = timesteps is not None or sigmas is not None
        return state, len(state.timesteps) if custom else num_inference_steps

    # -- the VAE ---------------------------------------------------------------------------
    def preprocess_image(self, image: Any, height: int | None = None, width: int | None = None) -> torch.Tensor:
        """A user image -> ``NCHW`` pixels in ``[-1, 1]``; a tensor with the VAE's latent channels is kept as is."""
        if isinstance(image, torch.Tensor) and image.ndim == 4 and image.shape[1] == self.vae.config.latent_channels:
            return image
        return self.image_processor.preprocess(image, height=height, width=width)

    def encode_images(self, images: torch.Tensor, generator: Generator | None) -> torch.Tensor:
        """Pixels ``[-1, 1]`` -> ``scaling_factor`` x latents drawn with ``generator`` (one per image when a
        list), in float32 where the VAE's ``force_upcast`` asks for it."""
        vae = self.vae
        if vae.config.force_upcast and vae.dtype != torch.float32:
            vae = self._float32_vae(images.device)
        return encode_with_vae(vae, images.to(vae.dtype), generator)

    def image_latents(
        self,
        image: torch.Tensor,
        images_total: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        statistics: bool,
        repeat_before_encoding: bool,
    ) -> torch.Tensor:
        """An image batch (or latents, when it has the VAE's latent channels) -> ``images_total`` scaled latents.

        ``statistics``: normalise with the VAE's ``latents_mean``/``latents_std``;
        ``repeat_before_encoding``: with a generator list, encode one copy of the image per
        generator rather than repeat the latents. img2img does both, inpainting neither, as in diffusers.
        """
        image = image.to(device=device, dtype=dtype)
        if image.shape[1] == self.vae.config.latent_channels:
            latents = image
        else:
            if isinstance(generator, list) and repeat_before_encoding:
                check_generator_count(generator, images_total)
                image = repeat_to_batch(image, images_total, "image")
            latents = self.encode_images(image, generator).to(dtype)
            latents = standardize_latents(latents, self.vae.config) if statistics else latents
        return repeat_to_batch(latents, images_total, "image")

    def vae_decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images ``[-1, 1]``; a float16 VAE decodes in float32 when its ``force_upcast`` says so.

        A float16 VAE without ``force_upcast`` that overflows (the SDXL VAE does) decodes again in
        float32 with a warning, rather than hand back NaN images.
        """
        vae = self.vae
        upcast = vae.dtype == torch.float16 and vae.config.force_upcast
        decoder = self._float32_vae(latents.device) if upcast else vae
        z = unscale_latents(latents.to(decoder.dtype), vae.config)
        images = decoder.decode(z, return_dict=False)[0]
        if not upcast and vae.dtype == torch.float16 and not torch.isfinite(images).all():
            logger.warning(
                "the float16 VAE overflowed while decoding (NaN/inf pixels), so it decoded again in float32; set "
                "force_upcast=true in vae/config.json, or use a VAE fine-tuned to run in float16"
            )
            decoder = self._float32_vae(latents.device)
            images = decoder.decode(unscale_latents(latents.float(), vae.config), return_dict=False)[0]
        return images

    def _float32_vae(self, device: torch.device) -> torch.nn.Module:
        return upcast_copy(self.vae, device, self._attention_backend)

    def decode_latents_to_images(
        self, latents: torch.Tensor, output_type: str, device: torch.device, dtype: torch.dtype
    ) -> tuple[Any, None]:
        """Latents -> ``output_type`` images, watermarked where the watermark is on; ``"latent"`` returns them as is."""
        del device, dtype
        if output_type == "latent":
            return latents, None
        images = self.vae_decode(latents)
        if self.watermark is not None:
            images = self.watermark.apply_watermark(images)
        return self.image_processor.postprocess(images, output_type=output_type), None

    def finish(self, images: Any, return_dict: bool) -> StableDiffusionXLPipelineOutput | tuple[Any]:
        self.maybe_free_model_hooks()
        return StableDiffusionXLPipelineOutput(images=images) if return_dict else (images,)

    def prepare_noise_latents(
        self,
        images_total: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
    ) -> torch.Tensor:
        """Unscaled noise for the latents of ``images_total`` images (img2img and inpainting add it)."""
        factor = self.vae_scale_factor
        shape = (images_total, self.vae.config.latent_channels, int(height) // factor, int(width) // factor)
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)


def _skipped_layers(encoder: Any, clip_skip: int | None) -> int:
    """``clip_skip`` checked against the encoder's depth (0 when ``None``)."""
    if clip_skip is None:
        return 0
    if not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or clip_skip < 0:
        raise ValueError(f"clip_skip must be None or an int >= 0, got {clip_skip!r}")
    layers = len(text_tower(encoder).encoder.layers)
    if clip_skip + 1 > layers:
        raise ValueError(f"clip_skip={clip_skip} goes past the {layers} layers of {type(encoder).__name__}")
    return clip_skip

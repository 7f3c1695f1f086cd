"""``StableDiffusionBase``: what every Stable Diffusion task shares, written once.

Prompt encoding (tokenise, truncate with a warning, CLIP skip, repeat per image, the negative
prompt), classifier-free guidance in one batched UNet call, the sampling plan with custom
timesteps or sigmas, latent preparation, decoding and the safety check. Task pipelines
(text-to-image now; image-to-image and inpainting later) subclass it, declare their
components in ``__init__`` and write only their own ``__call__``. Nothing a call computes is
stored on ``self``: one pipeline object serves concurrent calls.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from diffkit.outputs import output_type_of
from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler, SchedulerState
from diffkit_loader_transformers.clip import clip_text_hidden_states
from diffkit_processors_image.image_processor import OUTPUT_TYPES, VaeImageProcessor

from .guidance import classifier_free_guidance, guidance_scale_embedding, rescale_guidance

logger = logging.getLogger("diffkit.pipeline.stable_diffusion")

Prompt = str | list[str]

#: transformers' fast tokenizers set truncation and padding on the shared Rust tokenizer before each
#: call, so concurrent calls with different settings tokenize with each other's: one call at a time
_TOKENIZER_LOCK = threading.Lock()
Generator = torch.Generator | list[torch.Generator]
StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


def initial_noise(
    shape: tuple[int, ...],
    generator: Generator | None,
    device: torch.device,
    dtype: torch.dtype,
    latents: torch.Tensor | None,
) -> torch.Tensor:
    """Fresh noise of ``shape`` drawn with ``randn_tensor``, or the caller's ``latents`` checked against it."""
    if latents is None:
        return randn_tensor(shape, generator=generator, device=device, dtype=dtype)
    if tuple(latents.shape) != shape:
        raise ValueError(f"latents must have shape {shape} for this call, got {tuple(latents.shape)}")
    return latents.to(device)


@dataclass(frozen=True)
class Guidance:
    """The guidance settings of one call; ``enabled`` says whether the UNet sees the doubled batch."""

    scale: float
    rescale: float
    enabled: bool

    def batch_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """The latents once per guidance branch (twice with guidance: unconditional, text)."""
        return torch.cat([latents, latents]) if self.enabled else latents

    def batch_embeddings(self, prompt_embeds: torch.Tensor, negative_prompt_embeds: torch.Tensor | None) -> torch.Tensor:
        """What the UNet attends to, branch by branch: ``[negative; positive]`` with guidance."""
        return torch.cat([negative_prompt_embeds, prompt_embeds]) if self.enabled else prompt_embeds

    def combine(self, prediction: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction for the doubled batch (unconditional first) -> the guided prediction."""
        if not self.enabled:
            return prediction
        uncond, text = prediction.chunk(2)
        guided = classifier_free_guidance(uncond, text, self.scale)
        return rescale_guidance(guided, text, self.rescale) if self.rescale > 0.0 else guided


def _accepts(function: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(function).parameters


def modernized_scheduler(scheduler: Scheduler | None) -> Scheduler | None:
    """Replace the two legacy scheduler settings that old SD checkpoints carry, as diffusers does.

    ``steps_offset`` other than 1 becomes 1 and ``clip_sample=True`` becomes ``False``; both change
    the numbers, so a warning names them. The scheduler is immutable: a new one is built.
    """
    if scheduler is None or not hasattr(scheduler, "config"):
        return scheduler
    fixes: dict[str, Any] = {}
    if getattr(scheduler.config, "steps_offset", 1) != 1:
        fixes["steps_offset"] = 1
    if getattr(scheduler.config, "clip_sample", False) is True:
        fixes["clip_sample"] = False
    if not fixes:
        return scheduler
    old = {k: getattr(scheduler.config, k) for k in fixes}
    logger.warning(
        "%s config %s is outdated for Stable Diffusion; using %s instead (update scheduler/scheduler_config.json "
        "to silence this)", type(scheduler).__name__, old, fixes,
    )
    return type(scheduler).from_config(scheduler.config, **fixes)


def check_text_encoder_fits_unet(text_encoder: Any, unet: Any) -> None:
    """The text encoder's hidden size must be what the UNet's cross-attention (or ``encoder_hid_proj``) takes."""
    if text_encoder is None or unet is None:
        return
    hidden = getattr(getattr(text_encoder, "config", None), "hidden_size", None)
    unet_config = unet.config
    expected = getattr(unet_config, "encoder_hid_dim", None)
    field = "encoder_hid_dim"
    if expected is None:
        field = "cross_attention_dim"
        dims = getattr(unet_config, "cross_attention_dim", None)
        dims = set(dims) if isinstance(dims, (list, tuple)) else {dims}
        expected = dims.pop() if len(dims) == 1 else None
    if hidden is None or expected is None or hidden == expected:
        return
    raise ValueError(
        f"text_encoder ({type(text_encoder).__name__}) has hidden_size={hidden} but unet "
        f"({type(unet).__name__}) has {field}={expected}: the UNet cannot attend to these text embeddings; "
        "load a text encoder and UNet from the same checkpoint"
    )


class StableDiffusionBase(Pipeline):
    """Base of the Stable Diffusion pipelines: shared steps, no ``__call__`` of its own."""

    optional_components = ("safety_checker", "feature_extractor", "image_encoder")
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ("latents", "prompt_embeds", "negative_prompt_embeds")

    def _init_family(self, **components: Any) -> None:
        """Check and normalise the components, then construct (for the tasks' ``__init__``)."""
        components["scheduler"] = modernized_scheduler(components.get("scheduler"))
        check_text_encoder_fits_unet(components.get("text_encoder"), components.get("unet"))
        safety_checker = components.get("safety_checker")
        if safety_checker is None and components.get("requires_safety_checker", True):
            logger.warning(
                "%s runs without a safety checker (safety_checker=None): its images are not screened; "
                "pass requires_safety_checker=False to silence this", type(self).__name__,
            )
        if safety_checker is not None and components.get("feature_extractor") is None:
            raise ValueError(
                f"{type(self).__name__}: safety_checker needs a feature_extractor to prepare its input; "
                "pass one (a CLIPImageProcessor), or pass safety_checker=None"
            )
        Pipeline.__init__(self, **components)

    # -- derived settings ----------------------------------------------------------------
    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side: 2 ** (number of VAE blocks - 1), 8 without a VAE."""
        vae = getattr(self, "vae", None)
        return 2 ** (len(vae.config.block_out_channels) - 1) if vae is not None else 8

    @property
    def image_processor(self) -> VaeImageProcessor:
        """The post-processor for this VAE (a fresh immutable object: cheap, and nothing to share between calls)."""
        return VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def default_size(self) -> tuple[int, int]:
        """``(height, width)`` in pixels that the UNet was trained at: its ``sample_size`` times the VAE factor."""
        size = self.unet.config.sample_size
        if isinstance(size, int) and size < 64 and _written_before_0_9(self.unet.config):
            # diffusers before 0.9 wrote sample_size=32 for the 64-latent SD 1.x UNets; diffusers still reads 64
            logger.warning("unet config.json (diffusers < 0.9) says sample_size=%d; using 64 as diffusers does", size)
            size = 64
        height, width = (size, size) if isinstance(size, int) else tuple(size)
        return height * self.vae_scale_factor, width * self.vae_scale_factor

    def guidance(self, guidance_scale: float, guidance_rescale: float = 0.0) -> Guidance:
        """Guidance for one call: on for ``guidance_scale > 1`` unless the UNet embeds the scale itself (LCM)."""
        embeds_scale = getattr(self.unet.config, "time_cond_proj_dim", None) is not None
        return Guidance(guidance_scale, guidance_rescale, guidance_scale > 1.0 and not embeds_scale)

    # -- VAE memory toggles (settings of the VAE component, not of a call) --------------
    def enable_vae_slicing(self) -> None:
        """Decode one image at a time: less memory for large batches, the same numbers."""
        self.vae.enable_slicing()

    def disable_vae_slicing(self) -> None:
        self.vae.disable_slicing()

    def enable_vae_tiling(self) -> None:
        """Decode in overlapping tiles blended together: large images in bounded memory."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    # -- input checks --------------------------------------------------------------------
    def check_prompt_inputs(
        self,
        prompt: Prompt | None,
        negative_prompt: Prompt | None,
        prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
    ) -> int:
        """Validate the text inputs; returns the number of prompts (the batch before ``num_images_per_prompt``)."""
        if (prompt is None) == (prompt_embeds is None):
            raise ValueError(
                "pass exactly one of prompt and prompt_embeds (got "
                + ("both" if prompt is not None else "neither") + ")"
            )
        if prompt is not None:
            if isinstance(prompt, list):
                if not prompt or not all(isinstance(p, str) for p in prompt):
                    raise ValueError("prompt must be a string or a non-empty list of strings")
            elif not isinstance(prompt, str):
                raise ValueError(f"prompt must be a string or a list of strings, got {type(prompt).__name__}")
        if negative_prompt is not None and negative_prompt_embeds is not None:
            raise ValueError("pass at most one of negative_prompt and negative_prompt_embeds")
        if prompt_embeds is not None and prompt_embeds.ndim != 3:
            raise ValueError(f"prompt_embeds must be (batch, tokens, hidden), got shape {tuple(prompt_embeds.shape)}")
        if prompt_embeds is not None and negative_prompt_embeds is not None and (
            prompt_embeds.shape != negative_prompt_embeds.shape
        ):
            raise ValueError(
                f"prompt_embeds {tuple(prompt_embeds.shape)} and negative_prompt_embeds "
                f"{tuple(negative_prompt_embeds.shape)} must have the same shape"
            )
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"num_images_per_prompt must be an integer >= 1, got {num_images_per_prompt!r}")
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        _check_negative_count(negative_prompt, batch)
        return batch

    def check_image_size(self, height: int, width: int) -> None:
        factor = self.vae_scale_factor
        if height % factor or width % factor or height <= 0 or width <= 0:
            raise ValueError(
                f"height and width must be positive multiples of the VAE scale factor {factor}, "
                f"got height={height}, width={width}"
            )

    def check_callback_inputs(self, names: Sequence[str]) -> None:
        unknown = [n for n in names if n not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among {list(self._callback_tensor_inputs)}"
            )

    @staticmethod
    def check_output_type(output_type: str) -> None:
        output_type_of(output_type, OUTPUT_TYPES)  # "numpy" too: the image processor resolves it

    # -- prompt encoding -----------------------------------------------------------------
    def _tokenize(self, texts: list[str], max_length: int, tokenizer: Any = None) -> Any:
        tokenizer = tokenizer or self.tokenizer
        with _TOKENIZER_LOCK:
            return tokenizer(texts, padding="max_length", max_length=max_length, truncation=True, return_tensors="pt")

    def _warn_truncated(self, texts: list[str], tokenizer: Any = None) -> None:
        """Log, per prompt, the words that do not fit the tokenizer's length (``self.tokenizer``'s by default)."""
        tokenizer = tokenizer or self.tokenizer
        limit = tokenizer.model_max_length
        with _TOKENIZER_LOCK:
            full = tokenizer(texts, padding=False, truncation=False)["input_ids"]
        for ids in full:
            if len(ids) > limit:
                # the kept sequence ends in the end-of-text token at position limit - 1
                dropped = tokenizer.decode(ids[limit - 1 : -1])
                logger.warning(
                    "a prompt is longer than the %d tokens the text encoder reads; this part of it was cut: %r",
                    limit, dropped,
                )

    def _attention_mask(self, tokens: Any, device: torch.device) -> torch.Tensor | None:
        if getattr(self.text_encoder.config, "use_attention_mask", False):
            return tokens.attention_mask.to(device)
        return None

    def _text_hidden_states(self, tokens: Any, device: torch.device, clip_skip: int | None = None) -> torch.Tensor:
        """The text encoder's last hidden states, or with ``clip_skip=k`` those k layers earlier, normalised."""
        ids = tokens.input_ids.to(device)
        return clip_text_hidden_states(self.text_encoder, ids, self._attention_mask(tokens, device), clip_skip)

    def encode_prompt(
        self,
        prompt: Prompt | None,
        device: torch.device | str | None,
        num_images_per_prompt: int,
        do_classifier_free_guidance: bool,
        negative_prompt: Prompt | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        lora_scale: float | None = None,
        clip_skip: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Text -> ``(prompt_embeds, negative_prompt_embeds)``, each repeated ``num_images_per_prompt`` times.

        The signature and result are diffusers'. Prompts are padded and truncated to the
        tokenizer's ``model_max_length`` (a warning names what was cut). Each prompt's copies are
        adjacent. ``negative_prompt_embeds`` is ``None`` without guidance; with it, a missing
        negative prompt means the empty prompt. ``lora_scale`` is accepted for diffusers'
        signature: diffkit loads no LoRA layers, so there is nothing for it to scale.
        """
        del lora_scale
        device = torch.device(device) if device is not None else self._execution_device
        batch = 1 if isinstance(prompt, str) else len(prompt) if prompt is not None else prompt_embeds.shape[0]
        if prompt_embeds is None:
            texts = [prompt] if isinstance(prompt, str) else list(prompt)
            self._warn_truncated(texts)
            tokens = self._tokenize(texts, self.tokenizer.model_max_length)
            prompt_embeds = self._text_hidden_states(tokens, device, clip_skip)
        dtype = self._embeds_dtype(prompt_embeds)
        prompt_embeds = _repeat_per_image(prompt_embeds.to(dtype=dtype, device=device), num_images_per_prompt)

        if not do_classifier_free_guidance:
            return prompt_embeds, None
        if negative_prompt_embeds is None:
            negatives = _negative_texts(negative_prompt, batch)
            tokens = self._tokenize(negatives, prompt_embeds.shape[1])
            negative_prompt_embeds = self._text_hidden_states(tokens, device)
        negative_prompt_embeds = negative_prompt_embeds.to(dtype=dtype, device=device)
        return prompt_embeds, _repeat_per_image(negative_prompt_embeds, num_images_per_prompt)

    def _embeds_dtype(self, embeds: torch.Tensor) -> torch.dtype:
        for component in (getattr(self, "text_encoder", None), getattr(self, "unet", None)):
            if component is not None:
                return component.dtype
        return embeds.dtype

    # -- sampling ------------------------------------------------------------------------
    def plan_schedule(
        self,
        num_inference_steps: int,
        device: torch.device,
        timesteps: Sequence[int] | None = None,
        sigmas: Sequence[float] | None = None,
        **options: Any,
    ) -> SchedulerState:
        """The scheduler's per-call state for ``num_inference_steps``, or for a custom ``timesteps``/``sigmas`` list."""
        if timesteps is not None and sigmas is not None:
            raise ValueError("pass at most one of timesteps and sigmas (a custom schedule is one or the other)")
        for name, value in (("timesteps", timesteps), ("sigmas", sigmas)):
            if value is None:
                continue
            if not _accepts(self.scheduler.plan, name):
                raise ValueError(
                    f"{type(self.scheduler).__name__} does not take a custom {name} schedule; "
                    f"use a scheduler that does (e.g. EulerDiscreteScheduler) or pass num_inference_steps instead"
                )
            return self.scheduler.plan(device=device, **{name: value}, **options)
        return self.scheduler.plan(num_inference_steps, device=device, **options)

    def step_options(self, state: SchedulerState, eta: float, generator: Generator | None) -> dict[str, Any]:
        """``eta`` and ``generator`` for ``state.step``, each only where that scheduler's step takes it."""
        options: dict[str, Any] = {}
        if _accepts(state.step, "eta"):
            options["eta"] = eta
        elif eta:
            logger.warning("eta=%s is ignored: %s has no eta", eta, type(self.scheduler).__name__)
        if _accepts(state.step, "generator"):
            options["generator"] = generator
        return options

    def prepare_latents(
        self,
        batch_size: int,
        num_channels_latents: int,
        height: int,
        width: int,
        dtype: torch.dtype,
        device: torch.device,
        generator: Generator | None,
        latents: torch.Tensor | None,
        init_noise_sigma: float | torch.Tensor,
    ) -> torch.Tensor:
        """Initial noise ``(batch, channels, height / f, width / f)`` scaled by the schedule's first sigma.

        Drawn with ``randn_tensor`` (one draw per generator when a list is given), or ``latents``
        as given.
        """
        factor = self.vae_scale_factor
        shape = (batch_size, num_channels_latents, int(height) // factor, int(width) // factor)
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(
                f"generator is a list of {len(generator)} but {batch_size} images are made "
                "(prompts x num_images_per_prompt); pass one generator per image, or a single one"
            )
        return initial_noise(shape, generator, device, dtype, latents) * init_noise_sigma

    def timestep_condition(
        self, guidance_scale: float, batch_size: int, device: torch.device, dtype: torch.dtype
    ) -> torch.Tensor | None:
        """The guidance-scale embedding for UNets distilled with it (``time_cond_proj_dim``), else ``None``."""
        dim = getattr(self.unet.config, "time_cond_proj_dim", None)
        if dim is None:
            return None
        scales = torch.tensor(guidance_scale - 1).repeat(batch_size)
        return guidance_scale_embedding(scales, dim).to(device=device, dtype=dtype)

    def denoise(
        self,
        state: SchedulerState,
        latents: torch.Tensor,
        prompt_embeds: torch.Tensor,
        negative_prompt_embeds: torch.Tensor | None,
        guidance: Guidance,
        step_options: dict[str, Any],
        timestep_cond: torch.Tensor | None = None,
        cross_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        timesteps: torch.Tensor | None = None,
        extra_tensors: dict[str, Any] | None = None,
    ) -> torch.Tensor:
        """Run the sampling loop; with guidance the UNet sees ``[negative; positive]`` in one call per step.

        ``timesteps``: the part of the plan to run (all of it by default; img2img and SDXL's
        ``denoising_end`` run a slice). ``extra_tensors``: a task's per-call tensors, which its
        :meth:`unet_input`, :meth:`unet_conditioning` and :meth:`after_step` read and which
        callbacks may see and replace.
        """
        tensors: dict[str, Any] = {
            "latents": latents,
            # what the UNet attends to: the negative embeddings first when guidance is on
            "prompt_embeds": guidance.batch_embeddings(prompt_embeds, negative_prompt_embeds),
            "negative_prompt_embeds": negative_prompt_embeds,
            **(extra_tensors or {}),
        }
        timesteps = state.timesteps if timesteps is None else timesteps
        for i, t in enumerate(self.progress_bar(timesteps)):
            current = tensors["latents"]
            model_input = guidance.batch_latents(current)
            model_input = self.unet_input(state.scale_model_input(model_input, t), tensors)
            prediction = self.unet(
                model_input,
                t,
                encoder_hidden_states=tensors["prompt_embeds"],
                timestep_cond=timestep_cond,
                cross_attention_kwargs=cross_attention_kwargs,
                return_dict=False,
                **self.unet_conditioning(tensors),
            )[0]
            prediction = guidance.combine(prediction)
            stepped = state.step(prediction, t, current, **step_options, return_dict=False)[0]
            tensors["latents"] = self.after_step(stepped, i, timesteps, state, tensors)
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        return tensors["latents"]

    # -- hooks of the sampling loop for tasks (no-ops here) ------------------------------
    def unet_input(self, model_input: torch.Tensor, tensors: dict[str, Any]) -> torch.Tensor:
        """The scaled latents -> the UNet's input (inpainting UNets take the mask and masked image too)."""
        return model_input

    def unet_conditioning(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """Further UNet keyword arguments for a step (SDXL: ``added_cond_kwargs``)."""
        return {}

    def after_step(
        self, latents: torch.Tensor, step: int, timesteps: torch.Tensor, state: SchedulerState, tensors: dict[str, Any]
    ) -> torch.Tensor:
        """The latents after step ``step`` -> the latents the next step starts from (inpainting pastes the known region)."""
        return latents

    # -- decoding ------------------------------------------------------------------------
    def decode_latents_to_images(
        self, latents: torch.Tensor, output_type: str, device: torch.device, dtype: torch.dtype
    ) -> tuple[Any, list[bool] | None]:
        """Latents -> ``output_type`` images and the safety checker's flags (``None`` without one).

        ``"latent"`` returns the latents unchanged and runs neither the VAE nor the checker.
        """
        if output_type == "latent":
            return latents, None
        images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        images, flagged = self.run_safety_checker(images, device, dtype)
        keep = [True] * images.shape[0] if flagged is None else [not f for f in flagged]
        return self.image_processor.postprocess(images, output_type=output_type, do_denormalize=keep), flagged

    def run_safety_checker(
        self, images: torch.Tensor, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, list[bool] | None]:
        """Screen decoded images (``[-1, 1]``, NCHW); flagged ones come back blacked out."""
        if self.safety_checker is None:
            return images, None
        pil = self.image_processor.postprocess(images, output_type="pil")
        features = self.feature_extractor(pil, return_tensors="pt").to(device)
        images, flagged = self.safety_checker(images=images, clip_input=features.pixel_values.to(dtype))
        return images, [bool(f) for f in flagged]


def _written_before_0_9(config: Any) -> bool:
    """Whether a config file came from diffusers older than 0.9 (its ``_diffusers_version``)."""
    meta = getattr(config, "meta", {}) or {}
    numbers = re.findall(r"\d+", str(meta.get("_diffusers_version", "")))[:2]
    return len(numbers) == 2 and (int(numbers[0]), int(numbers[1])) < (0, 9)


def _repeat_per_image(embeds: torch.Tensor, copies: int) -> torch.Tensor:
    """``(batch, tokens, hidden)`` -> ``(batch * copies, tokens, hidden)`` with each prompt's copies adjacent."""
    return embeds.repeat_interleave(copies, dim=0) if copies > 1 else embeds


def _negative_texts(negative_prompt: Prompt | None, batch: int) -> list[str]:
    """One negative prompt per prompt: ``""`` when none is given, a string broadcast to every prompt."""
    if negative_prompt is None:
        return [""] * batch
    if isinstance(negative_prompt, str):
        return [negative_prompt] * batch
    _check_negative_count(negative_prompt, batch)
    return list(negative_prompt)


def _check_negative_count(negative_prompt: Prompt | None, batch: int) -> None:
    if isinstance(negative_prompt, list) and len(negative_prompt) != batch:
        raise ValueError(
            f"negative_prompt has {len(negative_prompt)} entries but there are {batch} prompts; "
            "pass one negative prompt per prompt, or a single string for all"
        )

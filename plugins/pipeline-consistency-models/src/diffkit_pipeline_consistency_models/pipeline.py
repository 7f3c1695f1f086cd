"""``ConsistencyModelPipeline``: one-step and multistep sampling of consistency models (Song et al.,
2023), optionally class-conditional."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline, image_noise_shape
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor

logger = logging.getLogger("diffkit.pipeline")

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]
LegacyCallback = Callable[[int, torch.Tensor, torch.Tensor], None]
ClassLabels = torch.Tensor | list[int] | int | None


def class_label_tensor(labels: ClassLabels, batch_size: int, num_classes: int | None, device: Any) -> torch.Tensor | None:
    """Class ids for a class-conditional UNet (``num_classes`` set), else ``None``.

    ``None`` draws ``batch_size`` labels with ``torch.randint`` from torch's global generator,
    as diffusers does (not from ``generator``): seed with ``torch.manual_seed`` for repeatable
    labels. An int needs ``batch_size == 1``.
    """
    if num_classes is None:
        if labels is not None:
            logger.warning("class_labels are ignored: this UNet is not class-conditional (num_class_embeds is None)")
        return None
    if isinstance(labels, bool):
        raise TypeError("class_labels must be an int, a list of ints, a tensor or None, got a bool")
    if isinstance(labels, int):
        if batch_size != 1:
            raise ValueError(f"class_labels is one int but batch_size={batch_size}; pass one label per image")
        labels = torch.tensor([labels], dtype=torch.int)
    elif isinstance(labels, (list, tuple)):
        labels = torch.tensor(list(labels), dtype=torch.int)
    elif labels is None:
        labels = torch.randint(0, num_classes, size=(batch_size,))
    elif not isinstance(labels, torch.Tensor):
        raise TypeError(f"class_labels must be an int, a list of ints, a tensor or None, got {type(labels).__name__}")
    if labels.numel() != batch_size:
        raise ValueError(f"got {labels.numel()} class_labels for batch_size={batch_size}; pass one per image")
    return labels.to(device)


class ConsistencyModelPipeline(Pipeline):
    """Sample images from a consistency model (a ``UNet2DModel``) with ``CMStochasticIterativeScheduler``."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__(unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        class_labels: ClassLabels = None,
        num_inference_steps: int | None = 1,
        timesteps: Sequence[int] | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback: LegacyCallback | None = None,
        callback_steps: int = 1,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images in ``num_inference_steps`` steps (1: one-step sampling) or
        at custom ``timesteps`` (which win over ``num_inference_steps``).

        ``latents``: starting noise of shape ``(batch, channels, size, size)``, scaled by
        ``σ_max`` like drawn noise. ``callback(i, t, sample)`` runs every ``callback_steps``
        steps (diffusers' older hook); ``callback_on_step_end`` after every step.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if num_inference_steps is None and timesteps is None:
            raise ValueError("pass num_inference_steps or timesteps")
        if num_inference_steps is not None and timesteps is not None:
            logger.warning("both num_inference_steps and timesteps given: timesteps=%s are used", list(timesteps))
        if not isinstance(callback_steps, int) or isinstance(callback_steps, bool) or callback_steps <= 0:
            raise ValueError(f"callback_steps must be a positive int, got {callback_steps!r}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        device = self._execution_device
        dtype = self.unet.dtype
        shape = image_noise_shape(self.unet.config, batch_size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        elif tuple(latents.shape) != shape:
            raise ValueError(f"latents have shape {tuple(latents.shape)}, expected {shape}")
        else:
            latents = latents.to(device=device, dtype=dtype)
        labels = class_label_tensor(class_labels, batch_size, self.unet.config.num_class_embeds, device)
        if timesteps is not None:
            state = self.scheduler.plan(timesteps=timesteps, device=device)
        else:
            state = self.scheduler.plan(num_inference_steps, device=device)
        tensors = {"latents": latents * state.init_noise_sigma}
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            scaled = state.scale_model_input(tensors["latents"], t)
            model_output = self.unet(scaled, t, class_labels=labels, return_dict=False)[0]
            tensors["latents"] = state.step(model_output, t, tensors["latents"], generator=generator)[0]
            if callback is not None and i % callback_steps == 0:
                callback(i, t, tensors["latents"])
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        images = VaeImageProcessor().postprocess(tensors["latents"], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

"""``PNDMPipeline``: unconditional image generation with PNDM sampling (Liu et al., 2022)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline, image_noise_shape
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor
from diffkit_scheduler_pndm.pndm import PNDMScheduler

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


class PNDMPipeline(Pipeline):
    """Sample images from a ``UNet2DModel`` with PNDM; any compatible scheduler config is converted.

    Every listed timestep is one model call: ``num_inference_steps + 9`` calls with the
    Runge-Kutta warm-up, ``num_inference_steps + 1`` with ``skip_prk_steps``.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        if not isinstance(scheduler, PNDMScheduler):
            scheduler = PNDMScheduler.from_config(scheduler.config)
        super().__init__(unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images; the same generator gives diffusers' images.

        The starting noise is drawn in float32 (as diffusers draws it) and then cast to the
        UNet's dtype. ``callback_on_step_end`` runs after every model call.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        device = self._execution_device
        shape = image_noise_shape(self.unet.config, batch_size)
        image = randn_tensor(shape, generator=generator, device=device).to(self.unet.dtype)
        state = self.scheduler.plan(num_inference_steps, device=device)
        tensors = {"latents": image}
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            model_output = self.unet(tensors["latents"], t).sample
            tensors["latents"] = state.step(model_output, t, tensors["latents"]).prev_sample
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        images = VaeImageProcessor().postprocess(tensors["latents"], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

"""``DDPMPipeline``: unconditional image generation (Ho et al., 2020)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline, image_noise_shape, step_kwargs
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


class DDPMPipeline(Pipeline):
    """Sample images from a ``UNet2DModel`` with a DDPM scheduler, or any other installed one.

    Unlike diffusers' DDPMPipeline it applies ``init_noise_sigma`` and ``scale_model_input``,
    which are exact no-ops for DDPM, so sigma-based schedulers give correct images too.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__(unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_inference_steps: int = 1000,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images; the same generator gives diffusers' images."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        device = self._execution_device
        image = randn_tensor(
            image_noise_shape(self.unet.config, batch_size), generator=generator, device=device, dtype=self.unet.dtype
        )
        state = self.scheduler.plan(num_inference_steps, device=device)
        # 1 and the identity for DDPM; they let any scheduler (Euler, DPM-Solver, ...) drive this pipeline
        tensors = {"latents": image * state.init_noise_sigma}
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            model_input = state.scale_model_input(tensors["latents"], t)
            model_output = self.unet(model_input, t).sample
            step = state.step(model_output, t, tensors["latents"], **step_kwargs(state, generator=generator))
            tensors["latents"] = step.prev_sample
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        images = VaeImageProcessor().postprocess(tensors["latents"], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

"""``KarrasVePipeline``: unconditional image generation with the stochastic sampler of Karras et al.
(2022, Algorithm 2) for variance-exploding models."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline, image_noise_shape
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


class KarrasVePipeline(Pipeline):
    """Sample images from a ``UNet2DModel`` with ``KarrasVeScheduler``.

    The model is used in the preconditioned form of the paper (eq. 213, as diffusers does):
    ``D(x̂, σ̂) = σ̂/2 · unet((x̂ + 1)/2, σ̂/2)``. Each timestep adds churn noise, takes an Euler
    step and, unless the next level is 0, a Heun correction (two model calls).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__(unet=unet, scheduler=scheduler)

    def _denoise(self, sample: torch.Tensor, sigma: Any) -> torch.Tensor:
        # D = σ/2 · F((x + 1)/2, σ/2)
        return (sigma / 2) * self.unet(((sample + 1) / 2).to(self.unet.dtype), sigma / 2).sample

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
        """Generate ``batch_size`` images (``num_inference_steps ≥ 2``); the same generator gives diffusers' images.

        The sample stays in float32, as diffusers keeps it; model inputs are cast to the UNet's dtype.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        device = self._execution_device
        state = self.scheduler.plan(num_inference_steps, device=device)
        shape = image_noise_shape(self.unet.config, batch_size)
        tensors = {"latents": randn_tensor(shape, generator=generator, device=device) * state.init_noise_sigma}
        host_timesteps = state.timesteps.tolist()  # one read per call, not one per step
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            sigma, sigma_prev = state.levels(host_timesteps[i])
            sample_hat, sigma_hat = state.add_noise_to_input(tensors["latents"], sigma, generator=generator)
            out = state.step(self._denoise(sample_hat, sigma_hat), sigma_hat, sigma_prev, sample_hat)
            if host_timesteps[i] > 0:  # the next level is not 0: second-order correction
                model_output = self._denoise(out.prev_sample, sigma_prev)
                out = state.step_correct(model_output, sigma_hat, sigma_prev, sample_hat, out.prev_sample, out.derivative)
            tensors["latents"] = out.prev_sample
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        images = VaeImageProcessor().postprocess(tensors["latents"], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

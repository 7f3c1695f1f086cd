"""``ScoreSdeVePipeline``: unconditional image generation with predictor-corrector sampling of the
variance-exploding SDE (Song et al., 2021) and an NCSN++ ``UNet2DModel``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline, image_noise_shape
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


def _noise_device(generator: torch.Generator | list[torch.Generator] | None) -> torch.device:
    """The CPU, where diffusers draws this pipeline's starting noise, unless the generator lives elsewhere."""
    first = generator[0] if isinstance(generator, (list, tuple)) else generator
    return first.device if first is not None else torch.device("cpu")


class ScoreSdeVePipeline(Pipeline):
    """Sample images from a score model (``UNet2DModel`` conditioned on the noise level σ).

    Per timestep: ``scheduler.config.correct_steps`` Langevin corrector steps, then one
    reverse-diffusion predictor step; the image is the last predictor mean, clipped to
    ``[0, 1]`` (these models work on ``[0, 1]`` images, so there is no denormalisation).
    """

    model_cpu_offload_seq = "unet"
    #: ``latents``: the current sample; ``sample_mean``: the last predictor mean (the final image)
    _callback_tensor_inputs: ClassVar[tuple[str, ...]] = ("latents", "sample_mean")

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__(unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 2000,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images; the same generator gives diffusers' images.

        Random draws follow diffusers: starting noise and corrector noise on the CPU in
        float32, predictor noise on the sample's device.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        device = self._execution_device
        dtype = self.unet.dtype
        state = self.scheduler.plan(num_inference_steps, device=device)
        shape = image_noise_shape(self.unet.config, batch_size)
        noise = randn_tensor(shape, generator=generator, device=_noise_device(generator))
        tensors = {"latents": (noise * state.init_noise_sigma).to(device), "sample_mean": None}
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            sigma_t = state.sigmas[i] * torch.ones(batch_size, device=device)
            sample = tensors["latents"]
            for _ in range(self.scheduler.config.correct_steps):
                model_output = self.unet(sample.to(dtype), sigma_t).sample
                sample = state.step_correct(model_output, sample, generator=generator).prev_sample
            model_output = self.unet(sample.to(dtype), sigma_t).sample
            out = state.step_pred(model_output, t, sample, generator=generator)
            tensors = {"latents": out.prev_sample, "sample_mean": out.prev_sample_mean}
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        final = tensors["sample_mean"] if tensors["sample_mean"] is not None else tensors["latents"]
        images = VaeImageProcessor(do_normalize=False).postprocess(final.clamp(0, 1), output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

"""``LDMPipeline``: unconditional image generation by latent diffusion (Rombach et al., 2022)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput, output_type_of
from diffkit.pipeline import Pipeline, image_noise_shape
from diffkit.randomness import randn_tensor
from diffkit.scheduler import Scheduler
from diffkit_models_autoencoder.vq_model import VQModel
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_processors_image.image_processor import OUTPUT_TYPES, VaeImageProcessor

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


def _accepts(step: Callable[..., Any], name: str) -> bool:
    return name in inspect.signature(step).parameters


class LDMPipeline(Pipeline):
    """Denoise latents with a ``UNet2DModel`` and decode them with a ``VQModel``.

    Sampling runs in the VQ model's unquantized latent space; the final latents are divided by
    ``vqvae.config.scaling_factor`` and decoded through the quantizer. As in diffusers, the
    scheduler's fresh noise (DDIM with ``eta > 0``) comes from torch's global generator, not
    from ``generator``, which only draws the initial latents: seed with ``torch.manual_seed``
    as well for reproducible ``eta > 0`` runs.
    """

    model_cpu_offload_seq = "unet->vqvae"

    def __init__(self, vqvae: VQModel, unet: UNet2DModel, scheduler: Scheduler) -> None:
        super().__init__(vqvae=vqvae, unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        batch_size: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        num_inference_steps: int = 50,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Generate ``batch_size`` images; ``eta`` (DDIM) = 0 is deterministic given the initial noise.

        ``output_type``: ``"pil"``, ``"np"`` (NHWC in [0, 1]), ``"pt"`` (NCHW in [0, 1]) or
        ``"latent"`` (the sampled latents, before scaling and decoding).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for batch_size={batch_size}; pass one per image")
        output_type = output_type_of(output_type, OUTPUT_TYPES)
        processor = VaeImageProcessor()
        device = self._execution_device
        # drawn in float32 like diffusers, then given to the UNet in its own precision
        latents = randn_tensor(image_noise_shape(self.unet.config, batch_size), generator=generator, device=device)
        latents = latents.to(self.unet.dtype)

        state = self.scheduler.plan(num_inference_steps, device=device)
        extra = {"eta": eta} if _accepts(state.step, "eta") else {}
        tensors = {"latents": latents * state.init_noise_sigma}
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            model_input = state.scale_model_input(tensors["latents"], t)
            noise_prediction = self.unet(model_input, t).sample
            tensors["latents"] = state.step(noise_prediction, t, tensors["latents"], **extra).prev_sample
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)

        latents = tensors["latents"]
        if output_type == "latent":
            images: Any = latents
        else:
            scaled = (latents / self.vqvae.config.scaling_factor).to(self.vqvae.dtype)
            decoded = self.vqvae.decode(scaled).sample
            images = processor.postprocess(decoded, output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

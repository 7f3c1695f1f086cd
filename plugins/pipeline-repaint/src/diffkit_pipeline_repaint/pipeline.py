"""``RePaintPipeline``: inpainting with an unconditional ``UNet2DModel`` and RePaint resampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit_processors_image.image_processor import VaeImageProcessor
from diffkit_scheduler_repaint.repaint import RePaintScheduler

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]
ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor | Sequence[Any]

#: PIL images are cropped by resizing to these multiples, as diffusers' RePaint preprocessing does
IMAGE_MULTIPLE, MASK_MULTIPLE = 8, 32


def _as_list(value: ImageInput) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def preprocess_image(image: ImageInput) -> torch.Tensor:
    """Images -> ``NCHW`` in ``[-1, 1]``: PIL images (resized down to a multiple of 8 with
    Lanczos) and ``NHWC`` arrays in ``[0, 1]`` are normalised; tensors are taken as they are.
    """
    items = _as_list(image)
    if items and all(isinstance(i, torch.Tensor) for i in items):
        return torch.cat([i if i.ndim == 4 else i[None] for i in items], dim=0)
    processor = VaeImageProcessor(vae_scale_factor=IMAGE_MULTIPLE, resample="lanczos", do_normalize=True)
    return processor.preprocess(items)


def preprocess_mask(mask_image: ImageInput) -> torch.Tensor:
    """Masks -> ``N1HW`` of 0/1 (1 keeps the original): PIL masks become grayscale, are
    resized down to a multiple of 32 (nearest) and thresholded at 0.5; tensors are taken as
    they are.
    """
    items = _as_list(mask_image)
    if items and all(isinstance(i, torch.Tensor) for i in items):
        return torch.cat([i if i.ndim == 4 else i[None] for i in items], dim=0)
    processor = VaeImageProcessor(
        vae_scale_factor=MASK_MULTIPLE,
        resample="nearest",
        do_normalize=False,
        do_binarize=True,
        do_convert_grayscale=True,
    )
    return processor.preprocess(items)


class RePaintPipeline(Pipeline):
    """Inpaint ``image`` where ``mask_image`` is 0, with a pixel-space ``UNet2DModel`` and RePaint.

    Each step denoises the whole image and re-imposes the forward-noised original where the
    mask is 1; every ``jump_length`` steps the sample is re-noised back up ``jump_length``
    steps and resampled, ``jump_n_sample - 1`` times. Where diffusers differs: a PIL mask is
    ``N1HW`` (diffusers makes it ``NHW``, which pairs masks with the wrong images when the
    batch has several), ``output_type="pt"`` returns a tensor, and ``callback_on_step_end``
    is supported (``"latents"`` is the image being inpainted).
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        if not isinstance(scheduler, RePaintScheduler):
            scheduler = RePaintScheduler.from_config(scheduler.config)
        super().__init__(unet=unet, scheduler=scheduler)

    @torch.inference_mode()
    def __call__(
        self,
        image: ImageInput,
        mask_image: ImageInput,
        num_inference_steps: int = 250,
        eta: float = 0.0,
        jump_length: int = 10,
        jump_n_sample: int = 10,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> ImagePipelineOutput | tuple[Any]:
        """Inpaint; ``eta`` 0 makes each step DDIM-like, 1 DDPM-like."""
        device, dtype = self._execution_device, self.unet.dtype
        original = preprocess_image(image).to(device=device, dtype=dtype)
        mask = preprocess_mask(mask_image).to(device=device, dtype=dtype)
        batch_size = original.shape[0]
        if isinstance(generator, list) and len(generator) != batch_size:
            raise ValueError(f"got {len(generator)} generators for {batch_size} images; pass one per image")
        tensors = {"latents": randn_tensor(original.shape, generator=generator, device=device, dtype=dtype)}
        state = self.scheduler.plan(num_inference_steps, jump_length, jump_n_sample, device, eta=eta)
        # the step-level generator: the first of a list, as in diffusers
        step_generator = generator[0] if isinstance(generator, list) else generator
        host = state.timestep_values
        last = host[0] + 1
        for i, t in enumerate(self.progress_bar(state.timesteps)):
            if host[i] < last:
                model_output = self.unet(tensors["latents"], t).sample
                tensors["latents"] = state.step(
                    model_output, t, tensors["latents"], original, mask, step_generator
                ).prev_sample
            else:
                tensors["latents"] = state.undo_step(tensors["latents"], last, step_generator)
            last = host[i]
            tensors = self.run_step_callback(callback_on_step_end, i, t, tensors, callback_on_step_end_tensor_inputs)
        images = VaeImageProcessor().postprocess(tensors["latents"], output_type=output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=images) if return_dict else (images,)

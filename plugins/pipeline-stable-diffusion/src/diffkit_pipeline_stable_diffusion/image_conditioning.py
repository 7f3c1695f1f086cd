"""What the image-conditioned Stable Diffusion tasks share: input checks, the strength schedule, VAE encoding.

img2img, inpainting and InstructPix2Pix (and SDXL's image tasks) start from a user image; these
functions turn it into latents with the random draws in diffusers' order, and cut the sampling
plan at ``strength`` in the call's scheduler state (never on the scheduler object).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch

from diffkit.scheduler import SchedulerState

_IMAGE_TYPES = (PIL.Image.Image, np.ndarray, torch.Tensor)


def check_image_input(value: Any, name: str, required: bool = True) -> None:
    """``value`` must be a PIL image, numpy array or torch tensor, or a non-empty list of them."""
    if value is None:
        if required:
            raise ValueError(f"{name} is required: pass a PIL image, a numpy array or a torch tensor")
        return
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    bad = sorted({type(i).__name__ for i in items if not isinstance(i, _IMAGE_TYPES)})
    if not items or bad:
        got = ", ".join(bad) if bad else "an empty list"
        raise TypeError(
            f"{name} must be a PIL image, a numpy array or a torch tensor (or a list of them), got {got}; "
            "load files with PIL.Image.open first"
        )


def preprocess_input(processor: Any, value: Any, name: str, **options: Any) -> torch.Tensor:
    """``processor.preprocess(value, **options)``; a refused input names the argument it came from."""
    try:
        return processor.preprocess(value, **options)
    except (TypeError, ValueError) as exc:
        raise (TypeError if isinstance(exc, TypeError) else ValueError)(f"{name}: {exc}") from None


def check_strength(strength: float) -> None:
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not 0.0 <= strength <= 1.0:
        raise ValueError(
            f"strength must be a number in [0, 1] (how much of the schedule to run from the image), got {strength!r}"
        )


def image_size(image: Any) -> tuple[int, int]:
    """``(height, width)`` of the first image of a PIL image, ``NHWC``/``HWC``/``HW`` array or ``NCHW``/``CHW`` tensor."""
    first = image[0] if isinstance(image, (list, tuple)) else image
    if isinstance(first, PIL.Image.Image):
        return first.height, first.width
    if isinstance(first, np.ndarray):
        if first.ndim == 4 or (first.ndim == 3 and first.shape[-1] in (1, 3, 4)):
            return first.shape[-3], first.shape[-2]
        return first.shape[-2], first.shape[-1]
    return first.shape[-2], first.shape[-1]


def strength_timesteps(
    state: SchedulerState, num_inference_steps: int, strength: float, order: int
) -> tuple[torch.Tensor, int]:
    """The tail of the plan that ``strength`` keeps, and its number of steps; the state starts there.

    ``strength * num_inference_steps`` steps (rounded down) run; the state's begin index skips
    the others, so schedulers that index sigmas by step (Euler, DPM-Solver) add noise and step
    from the right place.
    """
    # kept = min(floor(n * strength), n); start = n - kept
    kept = min(int(num_inference_steps * strength), num_inference_steps)
    start = max(num_inference_steps - kept, 0)
    state.set_begin_index(start * order)
    return state.timesteps[start * order :], num_inference_steps - start


def check_steps_left(steps: int, strength: float, num_inference_steps: int) -> None:
    if steps < 1:
        raise ValueError(
            f"strength={strength} of num_inference_steps={num_inference_steps} leaves no denoising step; "
            "raise strength or num_inference_steps"
        )


def encode_with_vae(vae: Any, pixels: torch.Tensor, generator: Any) -> torch.Tensor:
    """Pixels in ``[-1, 1]`` -> latents sampled from the VAE posterior, times ``scaling_factor``.

    With a list of generators, image ``i`` is encoded alone and drawn with ``generator[i]``.
    """
    if isinstance(generator, list):
        parts = [vae.encode(pixels[i : i + 1]).latent_dist.sample(generator[i]) for i in range(pixels.shape[0])]
        latents = torch.cat(parts, dim=0)
    else:
        latents = vae.encode(pixels).latent_dist.sample(generator)
    return vae.config.scaling_factor * latents


def repeat_to_batch(tensor: torch.Tensor, batch: int, name: str) -> torch.Tensor:
    """Tile ``tensor`` along dim 0 up to ``batch`` rows (``batch`` must be a multiple of its rows)."""
    rows = tensor.shape[0]
    if rows >= batch:
        return tensor
    if batch % rows:
        raise ValueError(
            f"{name}: {rows} given for {batch} images (prompts x num_images_per_prompt); pass one per prompt, "
            "or a number that divides it"
        )
    return tensor.repeat(batch // rows, *([1] * (tensor.ndim - 1)))


def check_generator_count(generator: Any, batch: int) -> None:
    if isinstance(generator, list) and len(generator) != batch:
        raise ValueError(
            f"generator is a list of {len(generator)} but {batch} images are made "
            "(prompts x num_images_per_prompt); pass one generator per image, or a single one"
        )

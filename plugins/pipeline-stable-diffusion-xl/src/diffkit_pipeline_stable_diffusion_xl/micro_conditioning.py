"""SDXL's size, crop and aesthetic conditioning and its schedule cut-offs, as small pure functions.

SDXL's UNet adds to its time embedding a sinusoidal embedding of six numbers (the base model:
original size, crop top-left, target size) or five (the refiner: original size, crop top-left,
aesthetic score), concatenated with the pooled text embedding. The width the UNet expects
(``projection_class_embeddings_input_dim``) says which one a checkpoint was trained with.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def size_time_ids(
    original_size: Sequence[int], crops_coords_top_left: Sequence[int], target_size: Sequence[int]
) -> list:
    # base: [orig_h, orig_w, crop_top, crop_left, target_h, target_w]
    return [*original_size, *crops_coords_top_left, *target_size]


def aesthetic_time_ids(original_size: Sequence[int], crops_coords_top_left: Sequence[int], score: float) -> list:
    # refiner: [orig_h, orig_w, crop_top, crop_left, aesthetic_score]
    return [*original_size, *crops_coords_top_left, score]


def check_time_ids_width(
    count: int, addition_time_embed_dim: int, projection_dim: int, expected: int, aesthetics: bool | None
) -> None:
    """The UNet's added-embedding input must be ``count`` sinusoids plus the pooled text embedding.

    ``aesthetics`` is the pipeline's ``requires_aesthetics_score`` (``None`` for text-to-image,
    which has no such setting); one sinusoid too many or too few means it is set wrongly.
    """
    given = addition_time_embed_dim * count + projection_dim
    if given == expected:
        return
    if aesthetics is not None and abs(given - expected) == addition_time_embed_dim:
        # the refiner's ids (aesthetic score) are one fewer than the base's (target size)
        fix = "requires_aesthetics_score=True" if given > expected else "requires_aesthetics_score=False"
        raise ValueError(
            f"the UNet takes {expected} added-embedding inputs but {given} were built "
            f"(requires_aesthetics_score={aesthetics}): this checkpoint needs {fix}; set it in "
            "model_index.json or pass it to from_pretrained/the constructor"
        )
    raise ValueError(
        f"the UNet takes {expected} added-embedding inputs (projection_class_embeddings_input_dim) but "
        f"{count} time ids x addition_time_embed_dim {addition_time_embed_dim} + pooled text width "
        f"{projection_dim} = {given}: the unet and text_encoder_2 (projection_dim) do not belong together"
    )


def is_fraction(value: object) -> bool:
    """``denoising_start``/``denoising_end`` take effect only as a float strictly between 0 and 1."""
    return isinstance(value, float) and 0.0 < value < 1.0


def timestep_cutoff(fraction: float, num_train_timesteps: int) -> int:
    # the training timestep where a share `fraction` of the noise has been removed: round(T - fraction T)
    return int(round(num_train_timesteps - fraction * num_train_timesteps))


def steps_before_end(timesteps: torch.Tensor, denoising_end: float, num_train_timesteps: int) -> int:
    """How many steps the base model runs with ``denoising_end``: those at or above the cut-off."""
    cutoff = timestep_cutoff(denoising_end, num_train_timesteps)
    return int((timesteps >= cutoff).sum().item())


def refiner_start(timesteps: torch.Tensor, denoising_start: float, num_train_timesteps: int, order: int) -> int:
    """Index of the first timestep the refiner runs with ``denoising_start``: those below the cut-off.

    A second-order scheduler needs an odd count, so that the hand-over does not split a step's pair.
    """
    cutoff = timestep_cutoff(denoising_start, num_train_timesteps)
    count = int((timesteps < cutoff).sum().item())
    if order == 2 and count % 2 == 0:
        count += 1
    return len(timesteps) - count

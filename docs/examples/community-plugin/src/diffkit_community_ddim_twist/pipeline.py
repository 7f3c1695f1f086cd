"""``DDIMTwistPipeline``: DDIM sampling that pulls every image towards its left-right mirror image.

It reuses what other plugins registered (``UNet2DModel``, ``DDIMScheduler``, the
``DDIMPipeline`` loop), so any DDIM or DDPM checkpoint loads into it; the twist is one
pipeline setting, ``symmetry``, stored in ``model_index.json``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from diffkit.outputs import ImagePipelineOutput
from diffkit.pipeline import Pipeline
from diffkit_pipeline_ddim.pipeline import DDIMPipeline
from diffkit_scheduler_ddim.ddim import DDIMScheduler

StepCallback = Callable[[Any, int, torch.Tensor, dict[str, Any]], dict[str, Any]]


def mirror_blend(latents: torch.Tensor, symmetry: float) -> torch.Tensor:
    """Blend ``latents`` with their left-right mirror: 0 keeps them, 1 makes them exactly symmetric."""
    if symmetry == 0:
        return latents
    half = symmetry / 2
    return (1 - half) * latents + half * latents.flip(-1)


class DDIMTwistPipeline(DDIMPipeline):
    """DDIM, with every intermediate sample blended with its mirror image after each step.

    ``symmetry`` in [0, 1]: 0 gives exactly what ``DDIMPipeline`` gives, 1 gives images that
    are exactly left-right symmetric; a call may override it.
    """

    def __init__(self, unet: Any, scheduler: Any, symmetry: float = 1.0) -> None:
        if not 0.0 <= float(symmetry) <= 1.0:
            raise ValueError(f"symmetry must be between 0 and 1, got {symmetry}")
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        Pipeline.__init__(self, unet=unet, scheduler=scheduler, symmetry=float(symmetry))

    def __call__(
        self,
        *args: Any,
        symmetry: float | None = None,
        callback_on_step_end: StepCallback | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
        **kwargs: Any,
    ) -> ImagePipelineOutput | tuple[Any]:
        """``DDIMPipeline.__call__`` with ``symmetry`` (default: the pipeline setting) applied after each step."""
        amount = self.settings["symmetry"] if symmetry is None else float(symmetry)
        if not 0.0 <= amount <= 1.0:
            raise ValueError(f"symmetry must be between 0 and 1, got {amount}")
        unknown = [n for n in callback_on_step_end_tensor_inputs if n not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"callback_on_step_end_tensor_inputs {unknown} are not among {list(self._callback_tensor_inputs)}"
            )
        if amount == 0:
            return super().__call__(*args, callback_on_step_end=callback_on_step_end,
                                    callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs, **kwargs)
        user_callback, user_names = callback_on_step_end, tuple(callback_on_step_end_tensor_inputs)

        # The amount lives in this closure, not on self: concurrent calls do not share it.
        def twist(pipe: Any, step: int, timestep: torch.Tensor, tensors: dict[str, Any]) -> dict[str, Any]:
            updated = {**tensors, "latents": mirror_blend(tensors["latents"], amount)}
            if user_callback is not None:
                returned = user_callback(pipe, step, timestep, {n: updated[n] for n in user_names}) or {}
                updated.update({k: v for k, v in returned.items() if k in updated})
            return updated

        return super().__call__(*args, callback_on_step_end=twist, callback_on_step_end_tensor_inputs=("latents",),
                                **kwargs)

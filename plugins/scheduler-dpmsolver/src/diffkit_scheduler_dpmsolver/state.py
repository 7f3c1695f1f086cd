"""``SolverState``: the per-call state every exponential-integrator solver shares.

It holds the run's timesteps (on the device) and sigmas (on the CPU, as the reference keeps them),
finds where a run starts, keeps the model-output history, and forward-diffuses for img2img.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import torch

from diffkit import schedules as S
from diffkit.scheduler import SchedulerState

if TYPE_CHECKING:
    from diffkit.scheduler import Scheduler


class SolverState(SchedulerState):
    """Timesteps, sigmas, step position and model-output history of one sampling run.

    Subclasses implement ``step``. The first step finds its position from the timestep: exactly,
    when it is an element of ``timesteps`` (what iterating yields), otherwise by value (the
    second match when a value repeats, as diffusers does for img2img); ``set_begin_index`` wins.
    """

    def __init__(
        self,
        scheduler: Scheduler,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        num_inference_steps: int | None,
        device: Any = None,
        history: int = 1,
        init_noise_sigma: float | torch.Tensor = 1.0,
    ) -> None:
        super().__init__(
            scheduler, timesteps.to(device) if device is not None else timesteps, num_inference_steps, init_noise_sigma
        )
        self.sigmas = sigmas
        self._cpu_timesteps = timesteps
        self.model_outputs: list[torch.Tensor | None] = [None] * history
        self.lower_order_nums = 0

    @functools.cached_property
    def _host(self) -> list[Any]:
        return self._cpu_timesteps.tolist()

    def _start(self, timestep: Any) -> int:
        """The index of this step, fixing the run's start on the first call."""
        if self.num_inference_steps is None:
            raise ValueError(
                f"{type(self.scheduler).__name__} has no inference steps yet: call set_timesteps(n) or plan(n) first"
            )
        if self.step_index is None:
            if self.begin_index is not None:
                self.step_index = self.begin_index
            else:
                i = S.view_position(timestep, self.timesteps) if isinstance(timestep, torch.Tensor) else None
                self.step_index = i if i is not None else S.first_step_index(timestep, self.timesteps, self._host)
        if self.step_index >= len(self._host):
            raise ValueError(
                f"all {len(self._host)} steps of this run have been taken; plan a new run to sample again"
            )
        return self.step_index

    def _push(self, model_output: torch.Tensor) -> None:
        self.model_outputs = [*self.model_outputs[1:], model_output]

    def _history(self, order: int) -> list[torch.Tensor]:
        """The newest ``order`` model outputs, newest first."""
        return [m for m in self.model_outputs[::-1][:order]]  # type: ignore[misc]

    def _sigma_indices(self, timesteps: torch.Tensor) -> list[int]:
        if self.begin_index is None:
            hits = [S.first_step_index(t, self._cpu_timesteps, self._host) for t in timesteps.reshape(-1).cpu()]
            return hits
        i = self.step_index if self.step_index is not None else self.begin_index
        return [i] * timesteps.reshape(-1).shape[0]

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        return sample


def broadcast_to(values: torch.Tensor, ndim: int) -> torch.Tensor:
    return values.reshape(-1, *([1] * (ndim - 1)))

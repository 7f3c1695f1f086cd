"""Tiny in-process components for core tests: no plugin package needed."""

from __future__ import annotations

import types
from typing import Any

import torch

from diffkit.config import Config
from diffkit.hookspecs import hookimpl
from diffkit.model import Model
from diffkit.pipeline import Pipeline
from diffkit.scheduler import Scheduler, SchedulerState


class ToyModelConfig(Config):
    owner_name = "ToyModel"
    features: int = 4
    sample_size: int = 2
    in_channels: int = 1


class ToyModel(Model):
    config_class = ToyModelConfig

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.proj = torch.nn.Linear(self.config.features, self.config.features)
        self.norm = torch.nn.LayerNorm(self.config.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class ToySchedulerConfig(Config):
    owner_name = "ToyScheduler"
    num_train_timesteps: int = 10


class ToyState(SchedulerState):
    def step(self, model_output, timestep, sample, generator=None, return_dict=True, **kwargs):
        return (sample - 0.1 * model_output,)


class ToyScheduler(Scheduler):
    config_class = ToySchedulerConfig

    def plan(self, num_inference_steps=None, device=None, **kwargs):
        n = num_inference_steps or self.config.num_train_timesteps
        return ToyState(self, torch.arange(n - 1, -1, -1, device=device), n)


class ToyPipeline(Pipeline):
    optional_components = ("helper",)

    def __init__(self, model: Any, scheduler: Any, helper: Any = None, strength: float = 1.0) -> None:
        super().__init__(model=model, scheduler=scheduler, helper=helper, strength=strength)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        state = self.scheduler.plan(3)
        for t in state.timesteps:
            x = state.step(self.model(x), t, x)[0]
        return x * self.settings["strength"]


@hookimpl
def register_models(register):
    register("ToyModel", ToyModel)


@hookimpl
def register_schedulers(register):
    register("ToyScheduler", ToyScheduler)


@hookimpl
def register_pipelines(register):
    register("ToyPipeline", ToyPipeline)


def hook_module() -> types.ModuleType:
    module = types.ModuleType("toy_hooks")
    module.register_models = register_models
    module.register_schedulers = register_schedulers
    module.register_pipelines = register_pipelines
    return module

"""Scheduler swaps on the demo checkpoint: what diffusers accepts loads and samples, what it does not list warns.

``DDPMScheduler``'s ``compatibles_names`` (diffusers' ``_compatibles``) names the schedulers a DDPM
config may be handed to. Each installed one must build ``from_config`` on the demo's scheduler config
(DDPM-only keys such as ``variance_type='fixed_small'`` are carried along or left to the target's
default, never an error) and run a four-step sample (PNDM's warm-up needs four) to finite images.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import torch

import diffkit.scheduler as scheduler_module
from diffkit import DiffusionPipeline, registry
from diffkit.config import Config
from diffkit.scheduler import compatible_schedulers

DEMO = "diffkit/ddpm-digits"


@pytest.fixture(scope="module")
def demo():
    pytest.importorskip("diffkit_pretrained_ddpm_digits")
    return DiffusionPipeline.from_pretrained(DEMO)


def _named_by_ddpm() -> list[str]:
    ddpm = registry.get("scheduler", "DDPMScheduler")
    return sorted(n for n in ddpm.compatibles_names if registry.has("scheduler", n))


@pytest.mark.parametrize("name", _named_by_ddpm())
def test_every_scheduler_ddpm_lists_loads_from_the_demo_config_and_samples(demo, name):
    cls = registry.get("scheduler", name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # EDMEulerScheduler: listed by DDPM, not the other way
        swapped = cls.from_config(demo.scheduler.config)
    assert type(swapped).__name__ == name
    pipe = type(demo)(**{**demo.components, "scheduler": swapped})
    generator = torch.Generator().manual_seed(0)
    images = pipe(batch_size=1, generator=generator, num_inference_steps=4, output_type="np").images
    assert np.isfinite(images).all() and images.shape[0] == 1


def test_a_foreign_value_the_target_rejects_falls_back_to_its_default(demo, caplog):
    dpm = registry.get("scheduler", "DPMSolverMultistepScheduler")
    assert demo.scheduler.config.variance_type == "fixed_small"
    with caplog.at_level(logging.WARNING, logger="diffkit.config"):
        swapped = dpm.from_config(demo.scheduler.config)
        again = dpm.from_config(demo.scheduler.config)
    assert swapped.config.variance_type is None and again.config.variance_type is None
    assert swapped.config.timestep_spacing == "leading" and swapped.config.clip_sample is True  # the rest is carried
    reports = [r for r in caplog.records if "variance_type='fixed_small'" in r.getMessage()]
    assert len(reports) <= 1  # once per process (an earlier test may have reported it already)
    assert dpm.from_config({**demo.scheduler.config.to_dict()}).config.variance_type is None  # a plain dict too
    with pytest.raises(Exception, match="variance_type"):
        dpm.from_config(demo.scheduler.config, variance_type="fixed_small")  # an explicit override stays checked
    with pytest.raises(Exception, match="variance_type"):
        dpm.from_config({**swapped.config.to_dict(), "variance_type": "fixed_small"})  # its own file stays strict


def test_edm_euler_is_not_compatible_with_the_demo_and_warns_once(demo, monkeypatch):
    monkeypatch.setattr(scheduler_module, "_incompatible_swaps_warned", set())
    edm = registry.get("scheduler", "EDMEulerScheduler")
    assert not edm.is_compatible_with(demo.scheduler) and not edm.is_compatible_with(demo.scheduler.config)
    assert "EDMEulerScheduler" not in compatible_schedulers(demo.scheduler.config)
    expected = {"DDIMScheduler", "DPMSolverMultistepScheduler", "DDPMScheduler"}
    assert expected <= set(compatible_schedulers(demo.scheduler))
    with pytest.warns(UserWarning, match="EDMEulerScheduler does not list DDPMScheduler") as caught:
        edm.from_config(demo.scheduler.config)
    assert "DDIMScheduler" in str(caught[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        edm.from_config(demo.scheduler.config)  # once per pair
        registry.get("scheduler", "DDIMScheduler").from_config(demo.scheduler.config)  # a compatible swap is silent


def test_compatibility_needs_a_known_source():
    with pytest.raises(ValueError, match="_class_name"):
        compatible_schedulers({"num_train_timesteps": 10})
    assert isinstance(Config.from_dict({}), Config)


def test_from_pretrained_on_another_schedulers_folder_is_a_swap_too(demo):
    """diffusers' ``DPMSolverMultistepScheduler.from_pretrained(ddpm_repo, subfolder="scheduler")`` works."""
    from diffkit_pretrained_ddpm_digits import CHECKPOINT

    dpm = registry.get("scheduler", "DPMSolverMultistepScheduler").from_pretrained(CHECKPOINT, subfolder="scheduler")
    assert dpm.config.variance_type is None and dpm.config.timestep_spacing == "leading"

"""UniPC plugin: registration, corrector switch, config checks (parity lives in tests/parity)."""

from __future__ import annotations

import pytest
import torch

from diffkit import registry
from diffkit.errors import ConfigError
from diffkit_scheduler_unipc.unipc import UniPCMultistepScheduler

torch.set_num_threads(1)


def test_registered():
    assert registry.get("scheduler", "UniPCMultistepScheduler") is UniPCMultistepScheduler


def test_disabling_the_corrector_changes_the_result():
    def run(**cfg):
        state = UniPCMultistepScheduler(**cfg).plan(6)
        x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
        for t in state.timesteps:
            x = state.step(0.1 * x + 0.01 * float(t), t, x).prev_sample
        return x

    assert not torch.equal(run(), run(disable_corrector=[1, 2]))


def test_shift_terminal_needs_flow_sigmas():
    with pytest.raises(ConfigError, match="shift_terminal"):
        UniPCMultistepScheduler(shift_terminal=0.1)

"""RePaintScheduler gives diffusers' numbers: the resampling timesteps and whole step/undo chains."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_repaint.repaint import RePaintScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)

SHAPE = (2, 3, 4, 4)
REF = diffusers.RePaintScheduler


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    return (0.1 * x.float() + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 37.0 + phase)).to(x.dtype)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


def run_chain(state, ref, original, mask, x, dtype, gens):
    """The RePaint pipeline loop: step down, undo_step back up where the schedule rises."""
    y = x.clone()
    g_ours, g_ref = gens
    last, ref_last = state.timesteps[0] + 1, ref.timesteps[0] + 1
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        if t < last:
            a = state.step(fake_model(x, t), t, x, original, mask, g_ours)
            b = ref.step(fake_model(y, rt), rt, y, original, mask, g_ref)
            assert_close(a.pred_original_sample, b.pred_original_sample, f"x0 at {i}")
            x, y = a.prev_sample, b.prev_sample
        else:
            x, y = state.undo_step(x, last, g_ours), ref.undo_step(y, ref_last, g_ref)
        assert_close(x, y, f"sample at {i} (t={int(t)})")
        last, ref_last = t, rt
    return x, y


@settings(max_examples=20, deadline=None)
@given(
    t_train=st.sampled_from([1000, 200, 200]),
    schedule=st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid", "trained"]),
    eta=st.sampled_from([0.0, 0.0, 0.5, 1.0]),
    clip=st.booleans(),
    n=st.integers(1, 25),
    jump_length=st.integers(1, 8),
    jump_n_sample=st.integers(1, 3),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.float16]),
    api=st.sampled_from(["plan", "legacy"]),
    seed=st.integers(0, 999),
)
def test_resampling_chain(t_train, schedule, eta, clip, n, jump_length, jump_n_sample, dtype, api, seed):
    cfg: dict = {"num_train_timesteps": t_train, "clip_sample": clip}
    ref_cfg = dict(cfg)
    if schedule == "trained":
        betas = np.linspace(0.0001, 0.02, t_train, dtype=np.float32)
        cfg["trained_betas"], ref_cfg["trained_betas"] = betas.tolist(), betas  # diffusers takes arrays only
    else:
        cfg["beta_schedule"] = ref_cfg["beta_schedule"] = schedule
    ours, ref = RePaintScheduler(**cfg), REF(**ref_cfg)
    ref.set_timesteps(n, jump_length, jump_n_sample)
    ref.eta = eta
    if api == "legacy":
        ours.set_timesteps(n, jump_length, jump_n_sample)
        ours.eta = eta  # diffusers' pipeline sets it this way
        state = ours
    else:
        state = ours.plan(n, jump_length, jump_n_sample, eta=eta)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    g = torch.Generator().manual_seed(seed)
    original = (torch.rand(SHAPE, generator=g) * 2 - 1).to(dtype)
    mask = (torch.rand(SHAPE[0], 1, *SHAPE[2:], generator=g) > 0.5).to(dtype)
    x = torch.randn(SHAPE, generator=g).to(dtype)
    gens = (torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed))
    run_chain(state, ref, original, mask, x, dtype, gens)


def test_bit_identical_and_tables():
    ours, ref = RePaintScheduler(beta_schedule="squaredcos_cap_v2"), REF(beta_schedule="squaredcos_cap_v2")
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        assert_matches(getattr(ours, name), getattr(ref, name))
    state = ours.plan(20, 5, 3, eta=0.7)
    ref.set_timesteps(20, 5, 3)
    ref.eta = 0.7
    g = torch.Generator().manual_seed(0)
    original, x = torch.rand(SHAPE, generator=g) * 2 - 1, torch.randn(SHAPE, generator=g)
    mask = (torch.rand(1, 1, 4, 4, generator=g) > 0.5).float()
    gens = (torch.Generator().manual_seed(1), torch.Generator().manual_seed(1))
    x, y = run_chain(state, ref, original, mask, x, torch.float32, gens)
    assert_matches(x, y)


def test_config_files_interoperate(tmp_path):
    cfg = {"beta_schedule": "sigmoid", "eta": 0.3, "clip_sample": False}
    ours, ref = RePaintScheduler(**cfg), REF(**cfg)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: REF.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert RePaintScheduler.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }

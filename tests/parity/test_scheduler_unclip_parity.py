"""UnCLIPScheduler gives diffusers' numbers: timesteps and whole trajectories, both prev_timestep modes."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_unclip.unclip import UnCLIPScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)

SHAPE = (2, 3, 4, 4)
REF = diffusers.UnCLIPScheduler


def fake_model(x: torch.Tensor, t, learned: bool) -> torch.Tensor:
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    out = (0.1 * x.float() + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 37.0 + phase)).to(x.dtype)
    return torch.cat([out, torch.tanh(x + 0.5)], dim=1) if learned else out


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


@settings(max_examples=25, deadline=None)
@given(
    t_train=st.sampled_from([1000, 1000, 64]),
    variance_type=st.sampled_from(["fixed_small_log", "learned_range"]),
    prediction_type=st.sampled_from(["epsilon", "sample"]),
    clip=st.booleans(),
    data=st.data(),
    mode=st.sampled_from(["listed", "default"]),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.float16]),
    api=st.sampled_from(["plan", "legacy"]),
    seed=st.integers(0, 999),
)
def test_trajectory(t_train, variance_type, prediction_type, clip, data, mode, dtype, api, seed):
    n = data.draw(st.integers(2, min(t_train, 80)))
    cfg = {"num_train_timesteps": t_train, "variance_type": variance_type, "prediction_type": prediction_type,
           "clip_sample": clip}
    ours, ref = UnCLIPScheduler(**cfg), REF(**cfg)
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    learned = variance_type == "learned_range"
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        # the unCLIP pipelines step to the next listed timestep, the last one to t - 1
        last = mode == "default" or i == n - 1
        prev, ref_prev = (None, None) if last else (state.timesteps[i + 1], ref.timesteps[i + 1])
        a = state.step(fake_model(x, t, learned), t, x, prev_timestep=prev, generator=g_ours)
        b = ref.step(fake_model(y, rt, learned), rt, y, prev_timestep=ref_prev, generator=g_ref)
        assert_close(a.pred_original_sample, b.pred_original_sample, f"x0 at step {i}")
        assert_close(a.prev_sample, b.prev_sample, f"x_prev at step {i}")
        x, y = a.prev_sample, b.prev_sample


def test_tables_add_noise_and_bit_identical_steps():
    ours, ref = UnCLIPScheduler(), REF()
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert_matches(getattr(ours, name), getattr(ref, name))
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    assert_matches(ours.add_noise(x0, eps, torch.tensor([5, 900])), ref.add_noise(x0, eps, torch.tensor([5, 900])))
    state = ours.plan(25)
    ref.set_timesteps(25)
    x, y = x0.clone(), x0.clone()
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        prev = state.timesteps[i + 1] if i + 1 < 25 else None
        ref_prev = ref.timesteps[i + 1] if i + 1 < 25 else None
        x = state.step(fake_model(x, t, False), t, x, prev_timestep=prev, generator=g_ours).prev_sample
        y = ref.step(fake_model(y, rt, False), rt, y, prev_timestep=ref_prev, generator=g_ref).prev_sample
        assert_matches(x, y)


def test_config_files_interoperate(tmp_path):
    cfg = {"variance_type": "learned_range", "prediction_type": "sample", "clip_sample_range": 5.0}
    ours, ref = UnCLIPScheduler(**cfg), REF(**cfg)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: REF.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert UnCLIPScheduler.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }

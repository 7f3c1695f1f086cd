"""DDPMWuerstchenScheduler gives diffusers' numbers: times, whole trajectories, add_noise."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_wuerstchen.wuerstchen import DDPMWuerstchenScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)

SHAPE = (2, 3, 4, 4)
REF = diffusers.DDPMWuerstchenScheduler


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    return (0.1 * x.float() + torch.sin(3 * torch.as_tensor(t, dtype=torch.float32).reshape(-1)[0] + phase)).to(x.dtype)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


@settings(max_examples=25, deadline=None)
@given(
    scaler=st.sampled_from([1.0, 1.0, 2.5, 0.6]),
    s=st.sampled_from([0.008, 0.02]),
    n=st.integers(1, 60),
    custom=st.booleans(),
    dtype=st.sampled_from([torch.float32, torch.float32, torch.float16, torch.bfloat16]),
    api=st.sampled_from(["plan", "legacy"]),
    per_sample=st.booleans(),
    seed=st.integers(0, 999),
)
def test_trajectory(scaler, s, n, custom, dtype, api, per_sample, seed):
    ours, ref = DDPMWuerstchenScheduler(scaler=scaler, s=s), REF(scaler=scaler, s=s)
    kwargs = {"timesteps": [1.0, 0.6667, 0.4, 0.25, 0.1, 0.0]} if custom else {"num_inference_steps": n}
    ref.set_timesteps(**kwargs)
    if api == "legacy":
        ours.set_timesteps(**kwargs)
        state = ours
    else:
        state = ours.plan(**kwargs)
    assert_close(state.timesteps, ref.timesteps, "timesteps")
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)
    y = x.clone()
    make = (lambda: [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]) if per_sample else (
        lambda: torch.Generator().manual_seed(seed))
    g_ours, g_ref = make(), make()
    for i, (t, rt) in enumerate(zip(state.timesteps[:-1], ref.timesteps[:-1], strict=True)):
        # as the Wuerstchen pipelines pass it: the time per batch item, in the model's dtype
        ratio, ref_ratio = t.expand(SHAPE[0]).to(dtype), rt.expand(SHAPE[0]).to(dtype)
        a = state.step(fake_model(x, ratio), ratio, x, generator=g_ours).prev_sample
        b = ref.step(fake_model(y, ref_ratio), ref_ratio, y, generator=g_ref).prev_sample
        assert_close(a, b, f"step {i} (t={float(t):.4f})")
        x, y = a, b


def test_bit_identical_and_per_item_times():
    ours, ref = DDPMWuerstchenScheduler(), REF()
    state = ours.plan(10)
    ref.set_timesteps(10)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for t, rt in zip(state.timesteps[:-1], ref.timesteps[:-1], strict=True):
        x = state.step(fake_model(x, t), t.expand(2), x, generator=g_ours).prev_sample
        y = ref.step(fake_model(y, rt), rt.expand(2), y, generator=g_ref).prev_sample
        assert_matches(x, y)
    # times that differ per batch item, and off the listed ones (the general path)
    times = torch.tensor([0.55, 0.5])
    a = state.step(fake_model(x, times), times, x, generator=torch.Generator().manual_seed(2)).prev_sample
    b = ref.step(fake_model(x, times), times, x, generator=torch.Generator().manual_seed(2)).prev_sample
    assert_matches(a, b)
    assert_matches(state.previous_timestep(times), ref.previous_timestep(times))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_add_noise(dtype):
    ours, ref = DDPMWuerstchenScheduler(scaler=1.5), REF(scaler=1.5)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=g).to(dtype), torch.randn(SHAPE, generator=g).to(dtype)
    t = torch.tensor([0.9, 0.2])
    a, b = ours.add_noise(x0, eps, t), ref.add_noise(x0, eps, t)
    assert a.dtype == dtype
    assert_matches(a, b, "add_noise")


def test_config_files_interoperate(tmp_path):
    ours, ref = DDPMWuerstchenScheduler(scaler=2.0, s=0.01), REF(scaler=2.0, s=0.01)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert fields == {"scaler": 2.0, "s": 0.01}
    assert {k: REF.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert DDPMWuerstchenScheduler.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }

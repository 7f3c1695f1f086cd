"""DDIMInverseScheduler gives diffusers' numbers: ascending timesteps and whole inversion trajectories."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_ddim.ddim_inverse import DDIMInverseScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("diffkit").setLevel(logging.ERROR)

SHAPE = (2, 3, 4, 4)
REF = diffusers.DDIMInverseScheduler


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    return (0.1 * x.float() + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 37.0 + phase)).to(x.dtype)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


@st.composite
def cases(draw) -> tuple[dict, int]:
    t = draw(st.sampled_from([1000, 1000, 300]))
    cfg: dict = {"num_train_timesteps": t}
    kind = draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2", "trained"]))
    if kind == "trained":
        cfg["trained_betas"] = np.linspace(0.0001, 0.02, t).tolist()
    else:
        cfg["beta_schedule"] = kind
    cfg["prediction_type"] = draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))
    cfg["rescale_betas_zero_snr"] = cfg["prediction_type"] == "v_prediction" and draw(st.booleans())
    cfg["clip_sample"] = draw(st.booleans())
    cfg["clip_sample_range"] = draw(st.sampled_from([1.0, 3.0]))
    cfg["set_alpha_to_one"] = draw(st.booleans())
    cfg["timestep_spacing"] = draw(st.sampled_from(["leading", "trailing"]))
    n = draw(st.integers(1, 100))
    cfg["steps_offset"] = draw(st.sampled_from([0, 1])) if (n - 1) * (t // n) + 1 < t else 0
    return cfg, n


@settings(max_examples=30, deadline=None)
@given(case=cases(), api=st.sampled_from(["plan", "legacy"]), half=st.booleans(), seed=st.integers(0, 999))
@example(case=({"timestep_spacing": "trailing", "prediction_type": "sample"}, 61), api="legacy", half=False, seed=0)
def test_inversion_trajectory(case, api, half, seed):
    cfg, n = case
    ours, ref = DDIMInverseScheduler(**cfg), REF(**cfg)
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    ref_ts = ref.timesteps
    if len(ref_ts) == n + 1:
        # documented divergence: for some n diffusers' trailing grid gains a leading -1
        assert ref_ts[0] == -1 and cfg["timestep_spacing"] == "trailing"
        ref_ts = ref_ts[1:]
    assert state.timesteps.tolist() == ref_ts.tolist()
    assert state.init_noise_sigma == ref.init_noise_sigma
    dtype = torch.float16 if half else torch.float32
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)
    y = x.clone()
    assert_matches(state.scale_model_input(x, state.timesteps[0]), ref.scale_model_input(y, ref_ts[0]))
    for i, (t, rt) in enumerate(zip(state.timesteps, ref_ts, strict=True)):
        a = state.step(fake_model(x, t), t, x)
        b = ref.step(fake_model(y, rt), rt, y)
        assert_close(a.pred_original_sample, b.pred_original_sample, f"x0 at step {i}")
        assert_close(a.prev_sample, b.prev_sample, f"x_next at step {i}")
        x, y = a.prev_sample, b.prev_sample
    assert state.step(fake_model(x, 17), 17, x, return_dict=False)[0].shape == x.shape  # any t in [0, T)


def test_bit_identical_and_tables():
    for dtype in (torch.float32, torch.float16):
        cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False,
               "set_alpha_to_one": False, "steps_offset": 1}
        ours, ref = DDIMInverseScheduler(**cfg), REF(**cfg)
        for name in ("betas", "alphas", "alphas_cumprod", "initial_alpha_cumprod"):
            assert_matches(getattr(ours, name), getattr(ref, name), name)
        state = ours.plan(25)
        ref.set_timesteps(25)
        x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)
        y = x.clone()
        for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
            x, y = state.step(fake_model(x, t), t, x).prev_sample, ref.step(fake_model(y, rt), rt, y).prev_sample
            assert_matches(x, y)


def test_deprecated_set_alpha_to_zero_behaves_as_in_diffusers():
    ours, ref = DDIMInverseScheduler(set_alpha_to_zero=False), REF(set_alpha_to_zero=False)
    assert_matches(ours.initial_alpha_cumprod, ref.initial_alpha_cumprod)
    assert ours.config.set_alpha_to_one is False  # the config says what the scheduler does


def test_config_files_interoperate(tmp_path):
    cfg = {"beta_schedule": "squaredcos_cap_v2", "timestep_spacing": "trailing", "prediction_type": "v_prediction"}
    ours, ref = DDIMInverseScheduler(**cfg), REF(**cfg)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: REF.from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert DDIMInverseScheduler.from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }
    assert list(ours.compatibles_names) == REF._compatibles == []


def test_inverse_from_a_ddim_config_undoes_ddim():
    """The DiffEdit/Pix2Pix-zero recipe: invert with the sampler's config, then sample back."""
    ddim_cls = pytest.importorskip("diffkit_scheduler_ddim.ddim").DDIMScheduler
    ddim = ddim_cls(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False)
    inverse = DDIMInverseScheduler.from_config(ddim.config)
    ref = REF.from_config(diffusers.DDIMScheduler(**{k: ddim.config[k] for k in ddim.config.model_dump()}).config)
    assert inverse.config.model_dump() == {k: ref.config[k] for k in inverse.config.model_dump()}
    state = inverse.plan(10)
    ref.set_timesteps(10)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
        x, y = state.step(fake_model(x, t), t, x).prev_sample, ref.step(fake_model(y, rt), rt, y).prev_sample
    assert_matches(x, y)

"""LCMScheduler and TCDScheduler give diffusers' numbers: timesteps, tables, whole trajectories."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit_scheduler_lcm.lcm import LCMScheduler  # noqa: E402
from diffkit_scheduler_lcm.tcd import TCDScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

torch.set_num_threads(1)
logging.getLogger("diffusers").setLevel(logging.ERROR)
logging.getLogger("diffkit").setLevel(logging.ERROR)

SETTINGS = settings(max_examples=25, deadline=None)
SHAPE = (2, 3, 4, 4)
PAIRS = {"lcm": (LCMScheduler, diffusers.LCMScheduler), "tcd": (TCDScheduler, diffusers.TCDScheduler)}


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a denoiser: a function of (x, t) only."""
    phase = torch.arange(x.shape[1], dtype=torch.float32).view(1, -1, 1, 1)
    return (0.1 * x.float() + torch.sin(torch.as_tensor(t, dtype=torch.float32) / 37.0 + phase)).to(x.dtype)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal within 1e-5, relative beyond 1; NaN and ±inf in the same places; same dtype and shape."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    a, b = ours.double(), ref.double()
    ok = (a == b) | ((a - b).abs() <= 1e-5 * b.abs().clamp(min=1)) | (a.isnan() & b.isnan())
    assert bool(ok.all()), f"{what}: max abs diff {(a - b).abs().nan_to_num(0, 0, 0).max().item():.3g}"


def generators(seed: int, per_sample: bool):
    if per_sample:
        return [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]
    return torch.Generator().manual_seed(seed)


@st.composite
def configs(draw) -> dict:
    t = draw(st.sampled_from([1000, 1000, 500]))
    cfg: dict = {"num_train_timesteps": t}
    kind = draw(st.sampled_from(["scaled_linear", "linear", "squaredcos_cap_v2", "trained"]))
    if kind == "trained":
        cfg["trained_betas"] = np.linspace(0.00085, 0.012, t).tolist()
    else:
        cfg["beta_schedule"] = kind
    cfg["prediction_type"] = draw(st.sampled_from(["epsilon", "sample", "v_prediction"]))
    cfg["rescale_betas_zero_snr"] = cfg["prediction_type"] != "epsilon" and draw(st.booleans())
    cfg["thresholding"] = draw(st.booleans())
    if cfg["thresholding"]:
        cfg["sample_max_value"] = draw(st.sampled_from([1.0, 2.0]))
    cfg["clip_sample"] = draw(st.booleans())
    cfg["set_alpha_to_one"] = draw(st.booleans())
    cfg["original_inference_steps"] = draw(st.sampled_from([50, 50, 20, 100]))
    cfg["timestep_scaling"] = draw(st.sampled_from([10.0, 4.5]))
    return cfg


def steps_for(draw, cfg: dict, strength: float) -> int:
    usable = min(int(cfg["original_inference_steps"] * strength), cfg["original_inference_steps"])
    return draw(st.integers(1, min(usable, 100)))


def run_pair(kind, ours_state, ref, steps, dtype, gens, step_kwargs):
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(11)).to(dtype)
    y = x.clone()
    g_ours, g_ref = gens
    second = "denoised" if kind == "lcm" else "pred_noised_sample"
    for i in range(steps):
        t, rt = ours_state.timesteps[i], ref.timesteps[i]
        a = ours_state.step(fake_model(x, t), t, x, generator=g_ours, **step_kwargs)
        b = ref.step(fake_model(y, rt), rt, y, generator=g_ref, **step_kwargs)
        assert_close(getattr(a, second), getattr(b, second), f"{second} at step {i} (t={int(t)})")
        assert_close(a.prev_sample, b.prev_sample, f"prev_sample at step {i} (t={int(t)})")
        x, y = a.prev_sample, b.prev_sample
    return x


# -- trajectories -----------------------------------------------------------------------------
@SETTINGS
@given(
    kind=st.sampled_from(["lcm", "tcd"]),
    cfg=configs(),
    data=st.data(),
    strength=st.sampled_from([1.0, 1.0, 0.6]),
    eta=st.sampled_from([0.0, 0.3, 1.0]),
    explicit_original=st.booleans(),
    api=st.sampled_from(["plan", "legacy"]),
    per_sample=st.booleans(),
    half=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(
    kind="lcm",
    cfg={"prediction_type": "v_prediction", "rescale_betas_zero_snr": True, "thresholding": True,
         "original_inference_steps": 50, "sample_max_value": 2.0},
    data=None, strength=0.6, eta=0.3, explicit_original=True, api="legacy", per_sample=True, half=False, seed=0,
)
def test_trajectory(kind, cfg, data, strength, eta, explicit_original, api, per_sample, half, seed):
    n = 4 if data is None else steps_for(data.draw, cfg, strength)
    ours, ref = PAIRS[kind][0](**cfg), PAIRS[kind][1](**cfg)
    kwargs = {"strength": strength}
    if explicit_original:
        kwargs["original_inference_steps"] = cfg["original_inference_steps"]
    if kind == "tcd" and explicit_original:
        n = min(n, len(range(int(cfg["num_train_timesteps"] * strength))))
    ref.set_timesteps(n, **kwargs)
    if api == "legacy":
        ours.set_timesteps(n, **kwargs)
        state = ours
    else:
        state = ours.plan(n, **kwargs)
    assert state.timesteps.dtype == ref.timesteps.dtype == torch.int64
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    assert state.init_noise_sigma == ref.init_noise_sigma == 1.0
    x = torch.randn(SHAPE)
    t = state.timesteps[0]
    assert_matches(state.scale_model_input(x, t), ref.scale_model_input(x, ref.timesteps[0]))
    step_kwargs = {"eta": eta} if kind == "tcd" else {}
    dtype = torch.float16 if half else torch.float32
    run_pair(kind, state, ref, n, dtype, (generators(seed, per_sample), generators(seed, per_sample)), step_kwargs)


@SETTINGS
@given(kind=st.sampled_from(["lcm", "tcd"]), data=st.data(), strength=st.sampled_from([1.0, 0.5]), seed=st.integers(0, 99))
def test_custom_timesteps(kind, data, strength, seed):
    origin = list(range(19, 1000, 20))  # the 50-step distillation schedule
    chosen = sorted(data.draw(st.sets(st.sampled_from(origin + [999, 500]), min_size=2, max_size=12)), reverse=True)
    ours, ref = PAIRS[kind][0](), PAIRS[kind][1]()
    state = ours.plan(timesteps=chosen, strength=strength)
    ref.set_timesteps(timesteps=chosen, strength=strength)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    assert state.num_inference_steps == ref.num_inference_steps == len(chosen)
    steps = len(state.timesteps)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    for i in range(steps):
        t, rt = state.timesteps[i], ref.timesteps[i]
        a = state.step(fake_model(x, t), t, x, generator=g_ours)
        b = ref.step(fake_model(y, rt), rt, y, generator=g_ref)
        last_of_shortened = i == steps - 1 and steps < len(chosen)
        if kind == "lcm" and last_of_shortened:
            # documented divergence: diffusers re-noises the final sample of a shortened custom run
            assert_close(a.denoised, b.denoised, "final denoised")
            assert torch.equal(a.prev_sample, a.denoised)
        else:
            assert_close(a.prev_sample, b.prev_sample, f"prev_sample at step {i}")
        x, y = a.prev_sample, b.prev_sample


@pytest.mark.parametrize("kind", ["lcm", "tcd"])
@pytest.mark.parametrize("begin", [0, 2, 5])
def test_set_begin_index_img2img(kind, begin):
    ours, ref = PAIRS[kind][0](), PAIRS[kind][1]()
    ours.set_timesteps(8)
    ref.set_timesteps(8)
    ours.set_begin_index(begin)
    ref.set_begin_index(begin)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(begin))
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for t, rt in zip(ours.timesteps[begin:], ref.timesteps[begin:], strict=True):
        x = ours.step(fake_model(x, t), t, x, generator=g_ours).prev_sample
        y = ref.step(fake_model(y, rt), rt, y, generator=g_ref).prev_sample
        assert ours.step_index == ref.step_index
    assert_close(x, y, "img2img result")


def test_float32_and_float16_runs_match():
    """Each step matches diffusers within the tolerance of its dtype, also where half tensors round coefficients."""
    for kind, kwargs in (("lcm", {}), ("tcd", {"eta": 0.3}), ("tcd", {"eta": 1.0})):
        for dtype in (torch.float32, torch.float16):
            cfg = {"prediction_type": "epsilon", "clip_sample": kind == "lcm"}
            ours, ref = PAIRS[kind][0](**cfg), PAIRS[kind][1](**cfg)
            state = ours.plan(6)
            ref.set_timesteps(6)
            x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)).to(dtype)
            y = x.clone()
            g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
            for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
                a = state.step(fake_model(x, t), t, x, generator=g_ours, **kwargs).prev_sample
                b = ref.step(fake_model(y, rt), rt, y, generator=g_ref, **kwargs).prev_sample
                assert a.dtype == dtype
                assert_matches(a, b, f"{kind} {dtype} t={int(t)}")
                x, y = a, b


# -- tables, helpers, configs -----------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["lcm", "tcd"])
def test_tables_noise_and_helpers(kind):
    cfg = {"beta_schedule": "squaredcos_cap_v2", "set_alpha_to_one": False}
    ours, ref = PAIRS[kind][0](**cfg), PAIRS[kind][1](**cfg)
    for name in ("betas", "alphas", "alphas_cumprod", "final_alpha_cumprod"):
        assert_matches(getattr(ours, name), getattr(ref, name), name)
    assert ours.timesteps.tolist() == ref.timesteps.tolist() and len(ours) == len(ref)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    ts = torch.tensor([3, 998])
    assert_matches(ours.add_noise(x0, eps, ts), ref.add_noise(x0, eps, ts))
    assert_matches(ours.get_velocity(x0, eps, ts), ref.get_velocity(x0, eps, ts))
    ours.set_timesteps(4)
    ref.set_timesteps(4)
    for t in ref.timesteps:
        assert ours.previous_timestep(t) == int(ref.previous_timestep(t))
    if kind == "lcm":
        for t in (torch.tensor(999), torch.tensor(0), torch.tensor(259)):
            mine, theirs = ours.get_scalings_for_boundary_condition_discrete(t), ref.get_scalings_for_boundary_condition_discrete(t)
            for m, r in zip(mine, theirs, strict=True):
                assert_matches(m, torch.as_tensor(r), f"boundary scalings at t={int(t)}")


@pytest.mark.parametrize("kind", ["lcm", "tcd"])
def test_config_files_interoperate(kind, tmp_path):
    cfg = {"beta_schedule": "linear", "original_inference_steps": 25, "timestep_scaling": 5.0, "clip_sample": False}
    ours, ref = PAIRS[kind][0](**cfg), PAIRS[kind][1](**cfg)
    ours.save_pretrained(tmp_path / "ours")
    ref.save_pretrained(tmp_path / "ref")
    fields = ours.config.model_dump()
    assert {k: PAIRS[kind][1].from_pretrained(tmp_path / "ours").config[k] for k in fields} == fields
    assert PAIRS[kind][0].from_pretrained(tmp_path / "ref").config.model_dump() == fields
    mine = json.loads((tmp_path / "ours" / "scheduler_config.json").read_text())
    theirs = json.loads((tmp_path / "ref" / "scheduler_config.json").read_text())
    assert {k: v for k, v in mine.items() if k != "_diffusers_version"} == {
        k: v for k, v in theirs.items() if k != "_diffusers_version"
    }
    assert sorted(ours.compatibles_names) == sorted(ref._compatibles) == []


@pytest.mark.parametrize("kind", ["lcm", "tcd"])
def test_swap_from_a_stable_diffusion_ddim_config(kind):
    """The LCM-LoRA recipe: ``LCMScheduler.from_config(pipe.scheduler.config)``."""
    sd = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
          "clip_sample": False, "set_alpha_to_one": False}
    ddim_ours = pytest.importorskip("diffkit_scheduler_ddim.ddim").DDIMScheduler(**sd)
    ours = PAIRS[kind][0].from_config(ddim_ours.config)
    ref = PAIRS[kind][1].from_config(diffusers.DDIMScheduler(**sd).config)
    fields = ours.config.model_dump()
    assert {k: ref.config[k] for k in fields} == fields
    state = ours.plan(4)
    ref.set_timesteps(4)
    gens = (torch.Generator().manual_seed(0), torch.Generator().manual_seed(0))
    x = run_pair(kind, state, ref, 4, torch.float32, gens, {})
    assert torch.isfinite(x).all()

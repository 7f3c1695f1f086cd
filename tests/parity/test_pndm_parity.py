"""PNDMScheduler, IPNDMScheduler and PNDMPipeline give diffusers' numbers, and diffusers loads what diffkit saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402
from diffkit_scheduler_pndm.ipndm import IPNDMScheduler  # noqa: E402
from diffkit_scheduler_pndm.pndm import PNDMScheduler  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)
SHAPE = (2, 3, 5, 5)
TINY_UNET = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a denoiser: a function of (x, t) only."""
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return 0.1 * x + torch.sin(torch.as_tensor(t, dtype=x.dtype) * 2.3 + phase)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal within 1e-5, relative for values beyond 1."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    ok = (ours - ref).abs() <= 1e-5 * ref.abs().clamp(min=1)
    assert bool(ok.all()), f"{what}: max abs diff {(ours - ref).abs().max().item():.3g}"


# -- PNDMScheduler ------------------------------------------------------------------------------
@st.composite
def pndm_configs(draw) -> tuple[dict, int]:
    t = draw(st.sampled_from([1000, 1000, 500, 97]))
    cfg: dict = {"num_train_timesteps": t}
    kind = draw(st.sampled_from(["linear", "scaled_linear", "squaredcos_cap_v2", "trained"]))
    start, end = draw(st.sampled_from([(0.0001, 0.02), (0.00085, 0.012)]))
    if kind == "trained":
        cfg["trained_betas"] = np.linspace(start, end, t).tolist()
    else:
        cfg.update(beta_schedule=kind, beta_start=start, beta_end=end)
    cfg["prediction_type"] = draw(st.sampled_from(["epsilon", "v_prediction"]))
    cfg["skip_prk_steps"] = draw(st.booleans())
    cfg["set_alpha_to_one"] = draw(st.booleans())
    cfg["timestep_spacing"] = draw(st.sampled_from(["leading", "trailing", "linspace"]))
    n = draw(st.integers(1 if cfg["skip_prk_steps"] else 4, 40))
    cfg["steps_offset"] = draw(st.sampled_from([0, 1])) if (n - 1) * (t // n) + 1 < t else 0
    return cfg, n


@SETTINGS
@given(case=pndm_configs(), api=st.sampled_from(["plan", "legacy"]), seed=st.integers(0, 2**16))
@example(case=({"skip_prk_steps": True, "steps_offset": 1, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "beta_end": 0.012}, 10), api="plan", seed=0)
@example(case=({"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, 4), api="legacy", seed=1)
def test_pndm_trajectory(case, api, seed):
    cfg, n = case
    ours, ref = PNDMScheduler(**cfg), diffusers.PNDMScheduler(**cfg)
    ref.set_timesteps(n)
    assume(len(ref._timesteps) == n)  # diffusers' trailing spacing may add a spurious -1 (documented)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert state.timesteps.tolist() == ref.timesteps.tolist()
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    y = x.clone()
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        x = state.step(fake_model(x, t), t, x).prev_sample
        y = ref.step(fake_model(y, rt), rt, y).prev_sample
        assert_close(x, y, f"x_prev at call {i} (t={int(t)})")


@pytest.mark.parametrize("cfg", [{}, {"skip_prk_steps": True, "prediction_type": "v_prediction"}])
def test_pndm_is_bit_identical_and_states_are_independent(cfg):
    """Two interleaved runs of one scheduler each give diffusers' numbers to the bit."""
    ours = PNDMScheduler(**cfg)
    first, second = ours.plan(12), ours.plan(12)
    ref = diffusers.PNDMScheduler(**cfg)
    ref.set_timesteps(12)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    y, z = x.clone(), x.clone() * 0.5
    for t, rt in zip(first.timesteps, ref.timesteps, strict=True):
        x = first.step(fake_model(x, t), t, x).prev_sample
        z = second.step(fake_model(z, t), t, z).prev_sample
        y = ref.step(fake_model(y, rt), rt, y).prev_sample
        assert_matches(x, y)
    assert len(first.ets) == 4 and not torch.equal(first.ets[-1], second.ets[-1])


def test_pndm_add_noise_matches():
    ours, ref = PNDMScheduler(beta_schedule="squaredcos_cap_v2"), diffusers.PNDMScheduler(beta_schedule="squaredcos_cap_v2")
    x, noise = torch.randn(SHAPE), torch.randn(SHAPE)
    t = torch.tensor([3, 870])
    assert_matches(ours.add_noise(x, noise, t), ref.add_noise(x, noise, t))


# -- IPNDMScheduler -----------------------------------------------------------------------------
@SETTINGS
@given(
    n=st.integers(1, 60),
    trained=st.booleans(),
    begin=st.integers(0, 5),
    api=st.sampled_from(["plan", "legacy"]),
    seed=st.integers(0, 2**16),
)
def test_ipndm_trajectory(n, trained, begin, api, seed):
    cfg = {"trained_betas": (np.sin(np.linspace(0.9, 0.0, n + 1) * np.pi / 2) ** 2).tolist()} if trained else {}
    ours, ref = IPNDMScheduler(**cfg), diffusers.IPNDMScheduler(**cfg)
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert_matches(state.timesteps, ref.timesteps)
    begin = min(begin, n - 1)
    if begin:  # start in the middle (img2img-style), as Dance Diffusion variations do
        state.set_begin_index(begin)
        ref.set_begin_index(begin)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))
    y = x.clone()
    for t, rt in zip(state.timesteps[begin:], ref.timesteps[begin:], strict=True):
        x = state.step(fake_model(x, t), t, x).prev_sample
        y = ref.step(fake_model(y, rt), rt, y).prev_sample
        assert_close(x, y, f"x_prev at t={float(t):.4f}")


def test_ipndm_default_state_matches_before_set_timesteps():
    """diffusers' scheduler is planned for num_train_timesteps steps at construction."""
    ours, ref = IPNDMScheduler(num_train_timesteps=50), diffusers.IPNDMScheduler(num_train_timesteps=50)
    assert_matches(ours.timesteps, ref.timesteps, "timesteps")
    assert_matches(ours.betas, ref.betas, "betas")
    x = torch.randn(SHAPE)
    t = ref.timesteps[3]
    assert_matches(ours.step(fake_model(x, t), t, x).prev_sample, ref.step(fake_model(x, t), t, x).prev_sample)


# -- PNDMPipeline -------------------------------------------------------------------------------
def _reference_pipeline(scheduler_options: dict):
    torch.manual_seed(0)
    return diffusers.PNDMPipeline(unet=diffusers.UNet2DModel(**TINY_UNET), scheduler=diffusers.PNDMScheduler(**scheduler_options))


def _run(pipe, generator, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=generator, output_type="np", **kwargs).images


@pytest.mark.parametrize(
    "scheduler_options, call",
    [
        ({}, dict(batch_size=2, num_inference_steps=4)),
        ({"skip_prk_steps": True, "steps_offset": 1, "set_alpha_to_one": True}, dict(num_inference_steps=5)),
        ({"prediction_type": "v_prediction", "timestep_spacing": "trailing"}, dict(num_inference_steps=4)),
    ],
)
def test_pipeline_images_match_diffusers(tmp_path, scheduler_options, call):
    reference = _reference_pipeline(scheduler_options)
    reference.save_pretrained(tmp_path / "ckpt")
    expected = _run(reference, torch.Generator().manual_seed(3), **call)
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    assert type(pipe).__name__ == "PNDMPipeline"
    got = _run(pipe, torch.Generator().manual_seed(3), **call)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_generator_list_and_diffusers_loads_what_diffkit_saved(tmp_path):
    _reference_pipeline({"skip_prk_steps": True}).save_pretrained(tmp_path / "a")
    ours = DiffusionPipeline.from_pretrained(tmp_path / "a")
    ours.save_pretrained(tmp_path / "b")
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "b")
    assert type(theirs).__name__ == "PNDMPipeline" and type(theirs.scheduler).__name__ == "PNDMScheduler"
    gens = lambda: [torch.Generator().manual_seed(s) for s in (4, 5)]  # noqa: E731
    expected = _run(theirs, gens(), batch_size=2, num_inference_steps=3)
    np.testing.assert_allclose(_run(ours, gens(), batch_size=2, num_inference_steps=3), expected, rtol=0, atol=1e-5)

"""KarrasVeScheduler and KarrasVePipeline give the numbers of diffusers' (deprecated) implementation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")
reference_scheduler = pytest.importorskip("diffusers.schedulers.deprecated.scheduling_karras_ve")
reference_pipeline = pytest.importorskip(
    "diffusers.pipelines.deprecated.stochastic_karras_ve.pipeline_stochastic_karras_ve"
)

from diffkit import DiffusionPipeline  # noqa: E402
from diffkit_scheduler_karras_ve.karras_ve import KarrasVeScheduler  # noqa: E402
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


def fake_denoiser(x: torch.Tensor, sigma) -> torch.Tensor:
    """A deterministic stand-in for ``σ/2·F((x+1)/2, σ/2)``: a function of (x, σ) only."""
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return -0.5 * torch.tanh(x / (torch.as_tensor(sigma) + 1)) + 0.01 * torch.cos(phase)


def generators(seed: int, per_sample: bool):
    if per_sample:
        return [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]
    return torch.Generator().manual_seed(seed)


def assert_close(ours: torch.Tensor, ref: torch.Tensor, what: str) -> None:
    """Equal within 1e-5, relative for values beyond 1."""
    assert ours.shape == ref.shape and ours.dtype == ref.dtype, what
    ok = (ours - ref).abs() <= 1e-5 * ref.abs().clamp(min=1)
    assert bool(ok.all()), f"{what}: max abs diff {(ours - ref).abs().max().item():.3g}"


@SETTINGS
@given(
    n=st.integers(2, 25),
    sigmas=st.sampled_from([(0.02, 100.0), (0.002, 80.0), (0.5, 3.0)]),
    churn=st.sampled_from([(80.0, 0.05, 50.0), (0.0, 0.05, 50.0), (7.0, 0.0, 1e9), (40.0, 1.0, 10.0)]),
    s_noise=st.sampled_from([1.007, 1.0, 0.5]),
    api=st.sampled_from(["plan", "legacy"]),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_trajectory(n, sigmas, churn, s_noise, api, per_sample, seed):
    cfg = dict(sigma_min=sigmas[0], sigma_max=sigmas[1], s_churn=churn[0], s_min=churn[1], s_max=churn[2], s_noise=s_noise)
    ours, ref = KarrasVeScheduler(**cfg), reference_scheduler.KarrasVeScheduler(**cfg)
    ref.set_timesteps(n)
    if api == "legacy":
        ours.set_timesteps(n)
        state = ours
    else:
        state = ours.plan(n)
    assert_matches(state.timesteps, ref.timesteps, "timesteps")
    assert_matches(state.schedule, ref.schedule, "schedule")
    g_ours, g_ref = generators(seed, per_sample), generators(seed, per_sample)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 1)) * sigmas[1]
    y = x.clone()
    for t, rt in zip(state.timesteps.tolist(), ref.timesteps, strict=True):
        sigma, sigma_prev = state.schedule[t], (state.schedule[t - 1] if t > 0 else 0)
        r_sigma, r_prev = ref.schedule[rt], (ref.schedule[rt - 1] if rt > 0 else 0)
        x_hat, s_hat = state.add_noise_to_input(x, sigma, generator=g_ours)
        y_hat, r_hat = ref.add_noise_to_input(y, r_sigma, generator=g_ref)
        assert_matches(s_hat, r_hat)
        assert_close(x_hat, y_hat, f"churned sample at t={t}")
        a = state.step(fake_denoiser(x_hat, s_hat), s_hat, sigma_prev, x_hat)
        b = ref.step(fake_denoiser(y_hat, r_hat), r_hat, r_prev, y_hat)
        if t > 0:
            a = state.step_correct(fake_denoiser(a.prev_sample, sigma_prev), s_hat, sigma_prev, x_hat, a.prev_sample, a.derivative)
            b = ref.step_correct(fake_denoiser(b.prev_sample, r_prev), r_hat, r_prev, y_hat, b.prev_sample, b.derivative)
        for name in ("prev_sample", "derivative", "pred_original_sample"):
            assert_close(getattr(a, name), getattr(b, name), f"{name} at t={t}")
        x, y = a.prev_sample, b.prev_sample


def test_python_float_levels_and_tuple_outputs_match():
    ours, ref = KarrasVeScheduler(), reference_scheduler.KarrasVeScheduler()
    ours.set_timesteps(5)
    ref.set_timesteps(5)
    x = torch.randn(SHAPE)
    for sigma in (0.01, 3.0, 70.0):  # below s_min, inside, above s_max
        a, sa = ours.add_noise_to_input(x, sigma, generator=torch.Generator().manual_seed(2))
        b, sb = ref.add_noise_to_input(x, sigma, generator=torch.Generator().manual_seed(2))
        assert sa == sb and type(sa) is type(sb)  # python float arithmetic: the same on every CPU
        assert_matches(a, b, f"churned sample at sigma={sigma}")
        # a float64 level takes the branch that decides on the device (as for accelerator tensors)
        level = torch.tensor(sigma, dtype=torch.float64)
        a, sa = ours.add_noise_to_input(x, level, generator=torch.Generator().manual_seed(2))
        b, sb = ref.add_noise_to_input(x, level, generator=torch.Generator().manual_seed(2))
        assert sa.dtype == torch.float64
        assert_matches(sa, sb, "float64 level")
        assert_matches(a, b, f"churned sample at float64 sigma={sigma}")
    out = ours.step(fake_denoiser(x, 3.0), 3.0, 1.5, x, return_dict=False)
    expected = ref.step(fake_denoiser(x, 3.0), 3.0, 1.5, x, return_dict=False)
    assert len(out) == 2
    for p, q in zip(out, expected, strict=True):
        assert_matches(p, q, "tuple output")


# -- KarrasVePipeline ---------------------------------------------------------------------------
def _reference_pipeline(scheduler_options: dict):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET)
    scheduler = reference_scheduler.KarrasVeScheduler(**scheduler_options)
    return reference_pipeline.KarrasVePipeline(unet=unet, scheduler=scheduler)


def _run(pipe, generator, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=generator, output_type="np", **kwargs).images


@pytest.mark.parametrize(
    "scheduler_options, call, per_sample",
    [
        ({}, dict(batch_size=2, num_inference_steps=4), False),
        ({"sigma_max": 10.0, "s_churn": 10.0, "s_max": 1e4}, dict(batch_size=2, num_inference_steps=3), True),
    ],
)
def test_pipeline_images_match_diffusers(tmp_path, scheduler_options, call, per_sample):
    reference = _reference_pipeline(scheduler_options)
    reference.save_pretrained(tmp_path / "ckpt")  # diffusers writes ["deprecated", "KarrasVeScheduler"]
    expected = _run(reference, generators(3, per_sample), **call)
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    assert type(pipe).__name__ == "KarrasVePipeline"
    got = _run(pipe, generators(3, per_sample), **call)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

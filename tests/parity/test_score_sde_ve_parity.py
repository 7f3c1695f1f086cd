"""ScoreSdeVeScheduler and ScoreSdeVePipeline (NCSN++ UNet) give diffusers' numbers for the same generator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402
from diffkit_scheduler_score_sde_ve.score_sde_ve import ScoreSdeVeScheduler  # noqa: E402

SETTINGS = settings(max_examples=25, deadline=None)
SHAPE = (2, 3, 5, 5)
#: a tiny NCSN++: Fourier noise-level embedding, skip blocks with FIR resampling, no fixed norm groups
TINY_NCSNPP = dict(
    sample_size=8,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 16),
    norm_num_groups=None,
    down_block_types=("SkipDownBlock2D", "SkipDownBlock2D"),
    up_block_types=("SkipUpBlock2D", "SkipUpBlock2D"),
    time_embedding_type="fourier",
    mid_block_scale_factor=math.sqrt(2.0),
    attention_head_dim=None,
    norm_eps=1e-6,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fake_score(x: torch.Tensor, sigma) -> torch.Tensor:
    """A deterministic stand-in for a score model: roughly -x/σ², a function of (x, σ) only."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return -x / (sigma**2 + 1) + 0.1 * torch.sin(phase + x)


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
    n=st.integers(1, 30),
    snr=st.sampled_from([0.15, 0.01, 0.4]),
    sigmas=st.sampled_from([(0.01, 1348.0), (0.02, 50.0), (0.3, 2.0)]),
    sampling_eps=st.sampled_from([1e-5, 1e-3, 0.2]),
    correct_steps=st.integers(0, 2),
    api=st.sampled_from(["plan", "legacy"]),
    per_sample=st.booleans(),
    seed=st.integers(0, 2**16),
)
@example(n=7, snr=0.15, sigmas=(0.01, 1348.0), sampling_eps=1e-5, correct_steps=1, api="legacy", per_sample=True, seed=0)
def test_predictor_corrector_trajectory(n, snr, sigmas, sampling_eps, correct_steps, api, per_sample, seed):
    cfg = dict(snr=snr, sigma_min=sigmas[0], sigma_max=sigmas[1], sampling_eps=sampling_eps, correct_steps=correct_steps)
    cfg["num_train_timesteps"] = 100  # only sizes the state a fresh scheduler starts with
    ours, ref = ScoreSdeVeScheduler(**cfg), diffusers.ScoreSdeVeScheduler(**cfg)
    ref.set_timesteps(n)
    ref.set_sigmas(n)
    if api == "legacy":
        ours.set_timesteps(n)
        ours.set_sigmas(n)
        state = ours
    else:
        state = ours.plan(n)
    for name in ("timesteps", "sigmas", "discrete_sigmas"):
        assert_matches(getattr(state, name), getattr(ref, name), name)
    g_ours, g_ref = generators(seed, per_sample), generators(seed, per_sample)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 1)) * sigmas[1]
    y = x.clone()
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        for _ in range(correct_steps):
            x = state.step_correct(fake_score(x, state.sigmas[i]), x, generator=g_ours).prev_sample
            y = ref.step_correct(fake_score(y, ref.sigmas[i]), y, generator=g_ref).prev_sample
            assert_close(x, y, f"corrector at step {i}")
        a = state.step_pred(fake_score(x, state.sigmas[i]), t, x, generator=g_ours)
        b = ref.step_pred(fake_score(y, ref.sigmas[i]), rt, y, generator=g_ref)
        assert_close(a.prev_sample_mean, b.prev_sample_mean, f"predictor mean at step {i}")
        assert_close(a.prev_sample, b.prev_sample, f"predictor sample at step {i}")
        x, y = a.prev_sample, b.prev_sample


def test_steps_and_add_noise_match():
    ours, ref = ScoreSdeVeScheduler(), diffusers.ScoreSdeVeScheduler()
    state = ours.plan(10)
    ref.set_timesteps(10)
    ref.set_sigmas(10)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)) * 1348
    y = x.clone()
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    for i, (t, rt) in enumerate(zip(state.timesteps, ref.timesteps, strict=True)):
        x = state.step_correct(fake_score(x, state.sigmas[i]), x, generator=g_ours).prev_sample
        y = ref.step_correct(fake_score(y, ref.sigmas[i]), y, generator=g_ref).prev_sample
        x = state.step_pred(fake_score(x, state.sigmas[i]), t, x, generator=g_ours).prev_sample
        y = ref.step_pred(fake_score(y, ref.sigmas[i]), rt, y, generator=g_ref).prev_sample
        assert_close(x, y, f"step {i}")
    noise, idx = torch.randn(SHAPE), torch.tensor([0, 9])
    assert_matches(state.add_noise(x, noise, idx), ref.add_noise(x, noise, idx), "add_noise")


# -- ScoreSdeVePipeline ---------------------------------------------------------------------------
def _reference_pipeline(scheduler_options: dict):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_NCSNPP)
    return diffusers.ScoreSdeVePipeline(unet=unet, scheduler=diffusers.ScoreSdeVeScheduler(**scheduler_options))


def _run(pipe, generator, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    return pipe(generator=generator, output_type="np", **kwargs).images


@pytest.mark.parametrize(
    "scheduler_options, call, per_sample",
    [
        ({}, dict(batch_size=2, num_inference_steps=4), False),
        ({"sigma_max": 20.0, "snr": 0.3, "correct_steps": 2}, dict(batch_size=2, num_inference_steps=3), True),
    ],
)
def test_pipeline_images_match_diffusers(tmp_path, scheduler_options, call, per_sample):
    reference = _reference_pipeline(scheduler_options)
    reference.save_pretrained(tmp_path / "ckpt")
    expected = _run(reference, generators(3, per_sample), **call)
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    assert type(pipe).__name__ == "ScoreSdeVePipeline"
    got = _run(pipe, generators(3, per_sample), **call)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_pipeline_output_types_and_callback(tmp_path):
    _reference_pipeline({"correct_steps": 0}).save_pretrained(tmp_path / "ckpt")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def callback(p, i, t, tensors):
        seen.append((i, sorted(tensors)))
        return {"sample_mean": torch.full_like(tensors["sample_mean"], 0.25)}

    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pt = pipe(generator=g(), num_inference_steps=2, output_type="pt", callback_on_step_end=callback,
              callback_on_step_end_tensor_inputs=["latents", "sample_mean"]).images
    assert seen == [(0, ["latents", "sample_mean"]), (1, ["latents", "sample_mean"])]
    assert pt.shape == (1, 3, 8, 8) and torch.all(pt == 0.25)  # the image is the last mean, not denormalised
    (pil,) = pipe(generator=g(), num_inference_steps=2, return_dict=False)
    assert pil[0].size == (8, 8)

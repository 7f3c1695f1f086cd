"""CMStochasticIterativeScheduler and ConsistencyModelPipeline give diffusers' numbers, and diffusers loads
what diffkit saves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402
from parity_tolerance import assert_matches  # noqa: E402
from diffkit_scheduler_consistency.cm_stochastic_iterative import CMStochasticIterativeScheduler  # noqa: E402

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
    resnet_time_scale_shift="scale_shift",
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def quiet_diffusers_scale_warning():
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    yield
    diffusers_logging.set_verbosity(level)


def fake_model(x: torch.Tensor, t) -> torch.Tensor:
    """A deterministic stand-in for a consistency model: a function of (x, t) only."""
    phase = torch.arange(x.shape[1], dtype=x.dtype).view(1, -1, 1, 1)
    return torch.tanh(x) * 0.7 + torch.sin(torch.as_tensor(t, dtype=x.dtype) / 100 + phase)


def generators(seed: int, per_sample: bool):
    if per_sample:
        return [torch.Generator().manual_seed(seed + i) for i in range(SHAPE[0])]
    return torch.Generator().manual_seed(seed)


@st.composite
def runs(draw) -> tuple[dict, dict]:
    """A config both libraries accept and a valid ``set_timesteps`` call for it."""
    t = draw(st.sampled_from([40, 40, 151, 2]))
    cfg = dict(
        num_train_timesteps=t,
        sigma_min=draw(st.sampled_from([0.002, 0.05])),
        sigma_max=draw(st.sampled_from([80.0, 10.0])),
        sigma_data=draw(st.sampled_from([0.5, 0.9])),
        s_noise=draw(st.sampled_from([1.0, 0.8])),
        rho=draw(st.sampled_from([7.0, 3.0])),
        clip_denoised=draw(st.booleans()),
    )
    if draw(st.booleans()):
        chosen = draw(st.sets(st.integers(0, t - 1), min_size=1, max_size=8))
        return cfg, {"timesteps": sorted(chosen, reverse=True)}
    return cfg, {"num_inference_steps": draw(st.integers(1, min(t, 12)))}


@SETTINGS
@given(case=runs(), api=st.sampled_from(["plan", "legacy"]), per_sample=st.booleans(), seed=st.integers(0, 2**16))
@example(case=({}, {"num_inference_steps": 1}), api="plan", per_sample=False, seed=0)
@example(case=({}, {"timesteps": [22, 0]}), api="legacy", per_sample=True, seed=1)
def test_trajectory(case, api, per_sample, seed):
    cfg, call = case
    ours, ref = CMStochasticIterativeScheduler(**cfg), diffusers.CMStochasticIterativeScheduler(**cfg)
    ref.set_timesteps(**call)
    if api == "legacy":
        ours.set_timesteps(**call)
        state = ours
    else:
        state = ours.plan(**call)
    assert_matches(state.timesteps, ref.timesteps, "timesteps")
    assert_matches(state.sigmas, ref.sigmas, "sigmas")
    g_ours, g_ref = generators(seed, per_sample), generators(seed, per_sample)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed + 1)) * ours.config.sigma_max
    y = x.clone()
    for t, rt in zip(state.timesteps, ref.timesteps, strict=True):
        a, b = state.scale_model_input(x, t), ref.scale_model_input(y, rt)
        assert_matches(a, b, "scale_model_input")
        x = state.step(fake_model(a, t), t, x, generator=g_ours).prev_sample
        y = ref.step(fake_model(b, rt), rt, y, generator=g_ref).prev_sample
        assert (x - y).abs().max() <= 1e-5, f"x_next at t={float(t):.4f}"


def test_unplanned_scheduler_and_add_noise_match():
    """Before set_timesteps diffusers walks the whole float64 training ladder; add_noise looks timesteps up."""
    ours, ref = CMStochasticIterativeScheduler(), diffusers.CMStochasticIterativeScheduler()
    assert_matches(ours.timesteps, ref.timesteps, "timesteps")
    assert_matches(ours.sigmas, ref.sigmas, "sigmas")
    x = torch.randn(SHAPE)
    y = x.clone()
    for t, rt in list(zip(ours.timesteps, ref.timesteps, strict=True))[:3]:
        x = ours.step(fake_model(ours.scale_model_input(x, t), t), t, x, generator=torch.Generator().manual_seed(2))[0]
        y = ref.step(fake_model(ref.scale_model_input(y, rt), rt), rt, y, generator=torch.Generator().manual_seed(2))[0]
        assert_matches(x, y, f"x_next at t={float(t):.4f}")
    fresh, fresh_ref = CMStochasticIterativeScheduler(), diffusers.CMStochasticIterativeScheduler()
    fresh.set_timesteps(5)
    fresh_ref.set_timesteps(5)
    noise = torch.randn(SHAPE)
    ts = fresh.timesteps[[3, 1]]
    assert_matches(fresh.add_noise(x, noise, ts), fresh_ref.add_noise(x, noise, fresh_ref.timesteps[[3, 1]]), "add_noise")


# -- ConsistencyModelPipeline -------------------------------------------------------------------
def _reference_pipeline(num_class_embeds: int | None):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET, num_class_embeds=num_class_embeds)
    return diffusers.ConsistencyModelPipeline(unet=unet, scheduler=diffusers.CMStochasticIterativeScheduler())


def _run(pipe, generator, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    torch.manual_seed(11)  # random class labels come from torch's global generator, as in diffusers
    return pipe(generator=generator, output_type="np", **kwargs).images


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A class-conditional and an unconditional checkpoint saved by diffusers, with their pipelines."""
    folder = tmp_path_factory.mktemp("cm")
    made = {}
    for name, classes in (("conditional", 10), ("unconditional", None)):
        reference = _reference_pipeline(classes)
        reference.save_pretrained(folder / name)
        made[name] = (reference, folder / name)
    return made


@pytest.mark.parametrize(
    "name, call, per_sample",
    [
        ("conditional", dict(batch_size=2), False),  # one step, random labels
        ("conditional", dict(batch_size=1, class_labels=3, num_inference_steps=None, timesteps=[22, 0]), False),
        ("conditional", dict(batch_size=2, class_labels=[1, 7], num_inference_steps=3), True),
        ("conditional", dict(batch_size=2, class_labels=torch.tensor([4, 0]), num_inference_steps=2), False),
        ("unconditional", dict(batch_size=2, num_inference_steps=2), True),
    ],
)
def test_pipeline_images_match_diffusers(checkpoints, name, call, per_sample):
    reference, folder = checkpoints[name]
    expected = _run(reference, generators(3, per_sample), **call)
    pipe = DiffusionPipeline.from_pretrained(folder)
    assert type(pipe).__name__ == "ConsistencyModelPipeline"
    got = _run(pipe, generators(3, per_sample), **call)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_given_latents_output_types_and_diffusers_loads_what_diffkit_saved(checkpoints, tmp_path):
    ours = DiffusionPipeline.from_pretrained(checkpoints["conditional"][1])
    ours.save_pretrained(tmp_path / "saved")
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "saved")
    assert type(theirs).__name__ == "ConsistencyModelPipeline"
    latents = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    call = dict(batch_size=2, class_labels=[2, 5], latents=latents, num_inference_steps=2)
    expected = _run(theirs, torch.Generator().manual_seed(1), **call)
    np.testing.assert_allclose(_run(ours, torch.Generator().manual_seed(1), **call), expected, rtol=0, atol=1e-5)
    ours.set_progress_bar_config(disable=True)
    pt = ours(class_labels=[2, 5], batch_size=2, latents=latents, output_type="pt").images
    np.testing.assert_allclose(pt.permute(0, 2, 3, 1).numpy(), _run(ours, None, **{**call, "num_inference_steps": 1}), atol=1e-7)
    pil = ours(class_labels=1, output_type="pil").images
    assert len(pil) == 1 and pil[0].size == (8, 8)

"""DDPMPipeline and DDIMPipeline give diffusers' images for diffusers' checkpoints, and back."""

from __future__ import annotations

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402

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


def _diffusers_pipeline(kind: str, scheduler_options: dict):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET)
    if kind == "ddpm":
        return diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler(**scheduler_options))
    return diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler(**scheduler_options))


def _run(pipe, seed, **kwargs):
    if hasattr(pipe, "set_progress_bar_config"):
        pipe.set_progress_bar_config(disable=True)
    return pipe(generator=torch.Generator().manual_seed(seed), output_type="np", **kwargs).images


CASES = [
    ("ddpm", {}, dict(batch_size=2, num_inference_steps=8)),
    ("ddpm", {"variance_type": "fixed_large", "clip_sample": False}, dict(batch_size=1, num_inference_steps=5)),
    ("ddpm", {"prediction_type": "v_prediction", "beta_schedule": "squaredcos_cap_v2"}, dict(num_inference_steps=6)),
    ("ddim", {}, dict(batch_size=2, num_inference_steps=6)),
    ("ddim", {"timestep_spacing": "trailing", "set_alpha_to_one": False}, dict(num_inference_steps=4, eta=1.0)),
    ("ddim", {"prediction_type": "sample"}, dict(num_inference_steps=5, eta=0.5, use_clipped_model_output=True)),
]


@pytest.mark.parametrize("kind, scheduler_options, call", CASES)
def test_images_match_diffusers(tmp_path, kind, scheduler_options, call):
    reference = _diffusers_pipeline(kind, scheduler_options)
    reference.save_pretrained(tmp_path / "ckpt")
    expected = _run(reference, seed=3, **call)

    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    assert type(pipe).__name__ == ("DDPMPipeline" if kind == "ddpm" else "DDIMPipeline")
    got = _run(pipe, seed=3, **call)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_generator_list_matches_diffusers(tmp_path):
    reference = _diffusers_pipeline("ddim", {})
    reference.save_pretrained(tmp_path / "ckpt")
    gens = lambda: [torch.Generator().manual_seed(s) for s in (1, 2)]  # noqa: E731
    reference.set_progress_bar_config(disable=True)
    expected = reference(batch_size=2, generator=gens(), num_inference_steps=4, eta=1.0, output_type="np").images
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    pipe.set_progress_bar_config(disable=True)
    got = pipe(batch_size=2, generator=gens(), num_inference_steps=4, eta=1.0, output_type="np").images
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_diffusers_loads_what_diffkit_saved(tmp_path):
    reference = _diffusers_pipeline("ddpm", {"num_train_timesteps": 100})
    reference.save_pretrained(tmp_path / "a")
    ours = DiffusionPipeline.from_pretrained(tmp_path / "a")
    ours.save_pretrained(tmp_path / "b")
    theirs = diffusers.DiffusionPipeline.from_pretrained(tmp_path / "b")
    assert type(theirs).__name__ == "DDPMPipeline"
    np.testing.assert_allclose(
        _run(theirs, seed=5, num_inference_steps=4), _run(ours, seed=5, num_inference_steps=4), rtol=0, atol=1e-5
    )


def test_output_types_and_return_dict(tmp_path):
    _diffusers_pipeline("ddim", {}).save_pretrained(tmp_path / "ckpt")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    pipe.set_progress_bar_config(disable=True)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    pil = pipe(generator=g(), num_inference_steps=2).images
    assert pil[0].size == (8, 8)
    pt = pipe(generator=g(), num_inference_steps=2, output_type="pt").images
    assert pt.shape == (1, 3, 8, 8)
    (arr,) = pipe(generator=g(), num_inference_steps=2, output_type="np", return_dict=False)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-7)


def test_callback_on_step_end_sees_and_replaces_latents(tmp_path):
    _diffusers_pipeline("ddim", {}).save_pretrained(tmp_path / "ckpt")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "ckpt")
    pipe.set_progress_bar_config(disable=True)
    seen = []

    def callback(p, i, t, kwargs):
        seen.append((i, int(t)))
        return {"latents": torch.zeros_like(kwargs["latents"])}

    out = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="np",
               callback_on_step_end=callback).images
    assert [i for i, _ in seen] == [0, 1, 2]
    np.testing.assert_allclose(out, 0.5)  # zero latents decode to mid grey
    with pytest.raises(ValueError, match="not among"):
        pipe(num_inference_steps=1, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["noise"])

"""DanceDiffusionPipeline and LDMPipeline give diffusers' audio and images for diffusers' checkpoints.

diffusers builds each tiny pipeline and saves it; ``DiffusionPipeline.from_pretrained``
resolves the diffkit pipeline from ``model_index.json`` and both run with generators seeded
alike. diffusers loading what diffkit saved is checked for LDMPipeline.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402

ATOL = 1e-5

TINY_UNET1D = dict(
    block_out_channels=(32, 32, 64),
    extra_in_channels=16,
    time_embedding_dim=16,
    sample_size=64,
    sample_rate=1000,
    in_channels=2,
    out_channels=2,
)
TINY_UNET2D = dict(
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
TINY_VQ = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=3,
    norm_num_groups=8,
    num_vq_embeddings=16,
    scaling_factor=0.5,
)


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster on one thread than split across cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def dance_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    unet = diffusers.UNet1DModel(**TINY_UNET1D)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # diffusers marks the pipeline as deprecated
        pipe = diffusers.DanceDiffusionPipeline(unet=unet, scheduler=diffusers.IPNDMScheduler())
    path = tmp_path_factory.mktemp("dance")
    pipe.save_pretrained(path)
    return _quiet(pipe), path


@pytest.fixture(scope="module")
def ldm_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    vqvae = diffusers.VQModel(**TINY_VQ)
    unet = diffusers.UNet2DModel(**TINY_UNET2D)
    pipe = diffusers.LDMPipeline(vqvae=vqvae, unet=unet, scheduler=diffusers.DDIMScheduler(num_train_timesteps=100))
    path = tmp_path_factory.mktemp("ldm")
    pipe.save_pretrained(path)
    return _quiet(pipe), path


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


# -- Dance Diffusion -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        dict(num_inference_steps=5),  # the UNet's own length, 64 samples
        dict(num_inference_steps=3, batch_size=2, audio_length_in_s=0.045),  # 45 samples: generated as 48, cut
    ],
)
def test_dance_audio_matches_diffusers(dance_checkpoint, call):
    reference, path = dance_checkpoint
    pipe = _quiet(DiffusionPipeline.from_pretrained(path))
    assert type(pipe).__name__ == "DanceDiffusionPipeline"
    assert type(pipe.scheduler).__name__ == "IPNDMScheduler"
    expected = reference(generator=torch.Generator().manual_seed(7), **call).audios
    got = pipe(generator=torch.Generator().manual_seed(7), **call).audios
    assert isinstance(got, np.ndarray) and got.dtype == np.float32
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_dance_generator_list_matches_diffusers(dance_checkpoint):
    reference, path = dance_checkpoint
    pipe = _quiet(DiffusionPipeline.from_pretrained(path))
    expected = reference(batch_size=2, generator=_gens((1, 2)), num_inference_steps=2).audios
    got = pipe(batch_size=2, generator=_gens((1, 2)), num_inference_steps=2).audios
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


# -- latent diffusion ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "call",
    [
        dict(batch_size=2, num_inference_steps=4),
        dict(num_inference_steps=3, eta=1.0),  # DDIM noise from the global generator, as in diffusers
    ],
)
def test_ldm_images_match_diffusers(ldm_checkpoint, call):
    reference, path = ldm_checkpoint
    pipe = _quiet(DiffusionPipeline.from_pretrained(path))
    assert type(pipe).__name__ == "LDMPipeline"
    torch.manual_seed(11)
    expected = reference(generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    torch.manual_seed(11)
    got = pipe(generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    assert got.shape == expected.shape == (call.get("batch_size", 1), 16, 16, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)


def test_ldm_generator_list_and_pil_match_diffusers(ldm_checkpoint):
    reference, path = ldm_checkpoint
    pipe = _quiet(DiffusionPipeline.from_pretrained(path))
    expected = reference(batch_size=2, generator=_gens((4, 5)), num_inference_steps=2, output_type="pil").images
    got = pipe(batch_size=2, generator=_gens((4, 5)), num_inference_steps=2, output_type="pil").images
    assert len(got) == 2
    for ours, theirs in zip(got, expected, strict=True):
        difference = np.abs(np.asarray(ours, dtype=np.int16) - np.asarray(theirs, dtype=np.int16))
        assert difference.max() <= 1  # 8-bit rounding of values within 1e-5


def test_diffusers_loads_what_diffkit_saved(ldm_checkpoint, tmp_path):
    _, path = ldm_checkpoint
    ours = _quiet(DiffusionPipeline.from_pretrained(path))
    ours.save_pretrained(tmp_path / "saved")
    theirs = _quiet(diffusers.DiffusionPipeline.from_pretrained(tmp_path / "saved"))
    assert type(theirs).__name__ == "LDMPipeline"
    expected = theirs(generator=torch.Generator().manual_seed(9), num_inference_steps=2, output_type="np").images
    got = ours(generator=torch.Generator().manual_seed(9), num_inference_steps=2, output_type="np").images
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)

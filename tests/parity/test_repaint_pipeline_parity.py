"""RePaintPipeline gives diffusers' images for a diffusers checkpoint, from PIL images and from tensors."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffkit import DiffusionPipeline  # noqa: E402

torch.set_num_threads(1)

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


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(**TINY_UNET)
    reference = diffusers.RePaintPipeline(unet=unet, scheduler=diffusers.RePaintScheduler(num_train_timesteps=100))
    reference.set_progress_bar_config(disable=True)
    path = tmp_path_factory.mktemp("repaint") / "ckpt"
    reference.save_pretrained(path)
    ours = DiffusionPipeline.from_pretrained(path)
    ours.set_progress_bar_config(disable=True)
    return reference, ours


def pil_inputs(size: int = 35) -> tuple[PIL.Image.Image, PIL.Image.Image]:
    """An RGB image and a mask whose sizes are not multiples of 8/32, so both get resized."""
    rng = np.random.default_rng(0)
    image = PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[:, : size // 2] = 255
    return image, PIL.Image.fromarray(mask)


def test_loads_as_repaint_pipeline(checkpoint):
    _, ours = checkpoint
    assert type(ours).__name__ == "RePaintPipeline"
    assert type(ours.scheduler).__name__ == "RePaintScheduler"


@pytest.mark.parametrize(
    "call",
    [
        dict(num_inference_steps=6, jump_length=2, jump_n_sample=2),
        dict(num_inference_steps=5, eta=1.0, jump_length=3, jump_n_sample=3),
        dict(num_inference_steps=4, eta=0.5, jump_length=10, jump_n_sample=10),
    ],
)
def test_pil_images_match_diffusers(checkpoint, call):
    reference, ours = checkpoint
    image, mask = pil_inputs()
    expected = reference(image, mask, generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    got = ours(image, mask, generator=torch.Generator().manual_seed(3), output_type="np", **call).images
    assert got.shape == expected.shape == (1, 32, 32, 3)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_tensor_inputs_and_pil_output_match_diffusers(checkpoint):
    reference, ours = checkpoint
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1
    mask = (torch.rand(1, 1, 8, 8, generator=g) > 0.5).float()
    call = dict(num_inference_steps=5, eta=0.3, jump_length=2, jump_n_sample=3)
    expected = reference(image, mask, generator=torch.Generator().manual_seed(1), **call).images
    got = ours(image, mask, generator=torch.Generator().manual_seed(1), **call).images
    assert [i.size for i in got] == [i.size for i in expected]
    for a, b in zip(got, expected, strict=True):  # within 1e-5 before rounding to 8 bits: at most one level apart
        assert np.abs(np.asarray(a).astype(int) - np.asarray(b).astype(int)).max() <= 1
    (array,) = ours(image, mask, generator=torch.Generator().manual_seed(1), output_type="np", return_dict=False, **call)
    np.testing.assert_allclose(array, np.stack([np.asarray(i) for i in expected]) / 255, atol=0.5 / 255 + 1e-6)


def test_generator_list_matches_diffusers(checkpoint):
    reference, ours = checkpoint
    g = torch.Generator().manual_seed(0)
    image = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    mask = torch.ones(1, 8, 8)  # diffusers' layout for one shared mask; it broadcasts over the batch
    mask[:, :, :4] = 0
    gens = lambda: [torch.Generator().manual_seed(s) for s in (4, 5)]  # noqa: E731
    call = dict(num_inference_steps=4, eta=1.0, jump_length=2, jump_n_sample=2, output_type="np")
    expected = reference(image, mask, generator=gens(), **call).images
    got = ours(image, mask, generator=gens(), **call).images
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        ours(image, mask, generator=gens()[:1] * 3, num_inference_steps=2)

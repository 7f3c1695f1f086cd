"""VaeImageProcessor parity: diffkit's preprocess, resize modes, crop region, blur and overlay give diffusers' pixels.

Both processors see the same PIL images, arrays and tensors (sizes that are not multiples of the VAE factor
included); every result must be bit-equal: the same PIL and torch operations run in the same order.
"""

from __future__ import annotations

import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

diffusers_ip = pytest.importorskip("diffusers.image_processor")

from diffkit_processors_image.image_processor import VaeImageProcessor  # noqa: E402

IMAGE = {}
MASK = {"do_normalize": False, "do_binarize": True, "do_convert_grayscale": True}


def _pair(**config):
    return VaeImageProcessor(**config), diffusers_ip.VaeImageProcessor(**config)


def _pixels(seed: int, height: int, width: int, channels: int = 3) -> np.ndarray:
    shape = (height, width) if channels == 1 else (height, width, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _same(config, image, **call):
    ours, theirs = _pair(**config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        expected = theirs.preprocess(image, **call)
    got = ours.preprocess(image, **call)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    assert torch.equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    height=st.integers(8, 40),
    width=st.integers(8, 40),
    target=st.sampled_from([None, (16, 24), (21, 13)]),
    mode=st.sampled_from(["default", "fill", "crop"]),
    mask=st.booleans(),
)
def test_pil_preprocess_matches_diffusers(seed, height, width, target, mode, mask):
    image = PIL.Image.fromarray(_pixels(seed, height, width, 1 if mask else 3))
    h, w = target if target is not None else (None, None)
    _same(MASK if mask else IMAGE, image, height=h, width=w, resize_mode=mode)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    height=st.integers(8, 30),
    width=st.integers(8, 30),
    kind=st.sampled_from(["np-hwc", "np-nhwc", "np-list", "pt-chw", "pt-nchw", "pt-list"]),
    target=st.sampled_from([None, (16, 24)]),
)
def test_array_and_tensor_preprocess_matches_diffusers(seed, height, width, kind, target):
    pixels = _pixels(seed, height, width).astype(np.float32) / 255.0
    tensor = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    image = {
        "np-hwc": pixels, "np-nhwc": np.stack([pixels, pixels[::-1].copy()]), "np-list": [pixels, pixels],
        "pt-chw": tensor, "pt-nchw": torch.stack([tensor, tensor.flip(1)]), "pt-list": [tensor, tensor],
    }[kind]
    h, w = target if target is not None else (None, None)
    _same(IMAGE, image, height=h, width=w)


@pytest.mark.parametrize("kind", ["np-hw", "np-hw1", "np-nhw", "pt-hw", "pt-nhw", "pt-n1hw", "pil-list"])
def test_mask_inputs_match_diffusers(kind):
    mask = (_pixels(3, 20, 12, 1) > 128).astype(np.float32)
    image = {
        "np-hw": mask, "np-hw1": mask[..., None], "np-nhw": np.stack([mask, mask]),
        "pt-hw": torch.from_numpy(mask)[None], "pt-nhw": torch.from_numpy(np.stack([mask, 1 - mask])),
        "pt-n1hw": torch.from_numpy(mask)[None, None],
        "pil-list": [PIL.Image.fromarray((mask * 255).astype(np.uint8))] * 2,
    }[kind]
    _same(MASK, image, height=16, width=8)


def test_latents_pass_through_and_negative_tensors_are_not_renormalised():
    latents = torch.randn(1, 4, 5, 7)
    assert VaeImageProcessor().preprocess(latents) is not None
    assert torch.equal(VaeImageProcessor().preprocess(latents), latents)
    _same(IMAGE, torch.rand(1, 3, 16, 16) * 2 - 1)


def test_crop_coords_and_fill_as_inpainting_uses_them():
    image = PIL.Image.fromarray(_pixels(1, 40, 56))
    mask_pixels = np.zeros((40, 56), np.uint8)
    mask_pixels[10:18, 30:50] = 255
    mask = PIL.Image.fromarray(mask_pixels)
    ours, theirs = _pair(**MASK)
    for pad in (0, 3, 30):
        coords = ours.get_crop_region(mask, 24, 16, pad=pad)
        assert coords == theirs.get_crop_region(mask, 24, 16, pad=pad)
        _same(IMAGE, image, height=16, width=24, resize_mode="fill", crops_coords=coords)
        _same(MASK, mask, height=16, width=24, resize_mode="fill", crops_coords=coords)


@settings(max_examples=25, deadline=None)
@given(
    top=st.integers(0, 30), left=st.integers(0, 30), h=st.integers(1, 20), w=st.integers(1, 20),
    pad=st.integers(0, 12), size=st.sampled_from([(16, 16), (16, 32), (40, 8)]),
)
def test_get_crop_region_matches_diffusers(top, left, h, w, pad, size):
    pixels = np.zeros((37, 45), np.uint8)
    pixels[top : top + h, left : left + w] = 200
    mask = PIL.Image.fromarray(pixels)
    assert VaeImageProcessor.get_crop_region(mask, *size, pad=pad) == diffusers_ip.VaeImageProcessor.get_crop_region(
        mask, *size, pad=pad
    )


def test_empty_mask_crop_region_is_a_clear_error():
    with pytest.raises(ValueError, match="no non-zero pixel"):
        VaeImageProcessor.get_crop_region(PIL.Image.new("L", (8, 8)), 8, 8)


def test_blur_and_apply_overlay_match_diffusers():
    ours, theirs = _pair()
    mask = PIL.Image.fromarray(_pixels(5, 24, 32, 1))
    assert np.array_equal(np.asarray(ours.blur(mask, 3)), np.asarray(theirs.blur(mask, 3)))
    init = PIL.Image.fromarray(_pixels(6, 24, 32))
    painted = PIL.Image.fromarray(_pixels(7, 16, 16))
    for coords in (None, (4, 2, 20, 18)):
        source = painted if coords else painted.resize((32, 24))
        expected = theirs.apply_overlay(mask, init, source, coords)
        assert np.array_equal(np.asarray(ours.apply_overlay(mask, init, source, coords)), np.asarray(expected))


def test_default_height_width_rounds_down_like_diffusers():
    ours, theirs = _pair(vae_scale_factor=8)
    for image in (PIL.Image.new("RGB", (37, 21)), np.zeros((1, 21, 37, 3)), torch.zeros(1, 3, 21, 37)):
        assert ours.get_default_height_width(image) == theirs.get_default_height_width(image) == (16, 32)
    assert ours.get_default_height_width(torch.zeros(1, 3, 8, 8), 30, 41) == (24, 40)


def test_bad_inputs_name_the_problem():
    proc = VaeImageProcessor()
    with pytest.raises(TypeError, match="got str"):
        proc.preprocess("image.png")
    with pytest.raises(TypeError, match="floats in"):
        proc.preprocess(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="resize_mode='fill' needs PIL"):
        proc.preprocess(torch.zeros(1, 3, 8, 8), resize_mode="fill")
    with pytest.raises(ValueError, match="resize_mode='zoom'"):
        proc.preprocess(PIL.Image.new("RGB", (8, 8)), resize_mode="zoom")
    with pytest.raises(ValueError, match="smaller than the VAE scale factor 8"):
        proc.preprocess(PIL.Image.new("RGB", (5, 30)))


def test_rgb_and_grayscale_together_is_a_config_error():
    from diffkit.errors import ConfigError

    with pytest.raises(ConfigError, match="do_convert_rgb and do_convert_grayscale are both true"):
        VaeImageProcessor(do_convert_rgb=True, do_convert_grayscale=True)
    with pytest.raises(ValueError):
        diffusers_ip.VaeImageProcessor(do_convert_rgb=True, do_convert_grayscale=True)

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit_processors_image.image_processor import VaeImageProcessor


def test_postprocess_output_types():
    proc = VaeImageProcessor()
    x = torch.linspace(-1.5, 1.5, 2 * 3 * 4 * 5).reshape(2, 3, 4, 5)
    pt = proc.postprocess(x, "pt")
    assert pt.shape == (2, 3, 4, 5) and pt.min() >= 0 and pt.max() <= 1
    np_images = proc.postprocess(x, "np")
    assert np_images.shape == (2, 4, 5, 3) and np_images.dtype == np.float32
    np.testing.assert_array_equal(proc.postprocess(x, "numpy"), np_images)  # diffusers' alias of "np"
    pil = proc.postprocess(x, "pil")
    assert len(pil) == 2 and pil[0].size == (5, 4) and pil[0].mode == "RGB"
    assert proc.postprocess(x, "latent") is x
    with pytest.raises(ValueError, match="output_type='jpg'"):
        proc.postprocess(x, "jpg")


def test_grayscale_becomes_mode_L():
    images = VaeImageProcessor().postprocess(torch.zeros(1, 1, 3, 3), "pil")
    assert images[0].mode == "L"


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_pil_round_trip_is_exact_on_8_bit_values(h, w, seed):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(h * 8, w * 8, 3), dtype=np.uint8)
    proc = VaeImageProcessor()
    tensor = proc.preprocess(PIL.Image.fromarray(pixels))
    assert tensor.shape == (1, 3, h * 8, w * 8) and tensor.min() >= -1 and tensor.max() <= 1
    back = np.asarray(proc.postprocess(tensor, "pil")[0])
    np.testing.assert_array_equal(back, pixels)


def test_preprocess_resizes_to_a_multiple_of_the_scale_factor():
    proc = VaeImageProcessor(vae_scale_factor=8)
    out = proc.preprocess(PIL.Image.new("RGB", (37, 21)))
    assert out.shape == (1, 3, 16, 32)


def test_preprocess_rejects_mixed_inputs():
    with pytest.raises(TypeError, match="a PIL image, a numpy array or a torch tensor"):
        VaeImageProcessor().preprocess([PIL.Image.new("RGB", (8, 8)), np.zeros((8, 8, 3))])

"""The numerical building blocks, checked against direct formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffkit_models_unet.attention import SpatialSelfAttention
from diffkit_models_unet.embeddings import GaussianFourierProjection, sinusoidal_embedding
from diffkit_models_unet.resnet import ResnetBlock2D
from diffkit_models_unet.sampling import Downsample2D, fir_downsample, fir_kernel, fir_upsample, upfirdn2d


def test_fir_kernel_is_normalised_binomial():
    kernel = fir_kernel()
    assert kernel.shape == (4, 4)
    torch.testing.assert_close(kernel.sum(), torch.tensor(1.0))
    torch.testing.assert_close(kernel[0, 0] * 64, torch.tensor(1.0))
    torch.testing.assert_close(kernel[1, 1] * 64, torch.tensor(9.0))
    torch.testing.assert_close(fir_kernel(gain=4.0).sum(), torch.tensor(4.0))


def _separable_reference(x: torch.Tensor, taps: torch.Tensor, stride: int, pad: tuple[int, int]) -> torch.Tensor:
    """Row then column 1-D convolutions of each channel: an independent path to the same filter."""
    c = x.shape[1]
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    rows = taps.flip(0).view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    cols = taps.flip(0).view(1, 1, -1, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(x, rows, groups=c)
    x = F.conv2d(x, cols, groups=c)
    return x[:, :, ::stride, ::stride]


def test_fir_downsample_matches_separable_filter():
    x = torch.randn(2, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
    expected = _separable_reference(x, taps, stride=2, pad=(1, 1))
    out = fir_downsample(x)
    assert out.shape == (2, 3, 4, 3)
    torch.testing.assert_close(out, expected)


def test_fir_upsample_matches_zero_insertion_then_filter():
    x = torch.randn(1, 2, 4, 5, generator=torch.Generator().manual_seed(1))
    spread = torch.zeros(1, 2, 8, 10)
    spread[:, :, ::2, ::2] = x
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 4  # gain 4 over two axes
    expected = _separable_reference(spread, taps, stride=1, pad=(2, 1))
    out = fir_upsample(x)
    assert out.shape == (1, 2, 8, 10)
    torch.testing.assert_close(out, expected)


def test_fir_resampling_keeps_constant_level_inside():
    x = torch.full((1, 1, 8, 8), 2.5)
    torch.testing.assert_close(fir_downsample(x)[..., 1:-1, 1:-1], torch.full((1, 1, 2, 2), 2.5))
    torch.testing.assert_close(fir_upsample(x)[..., 2:-2, 2:-2], torch.full((1, 1, 12, 12), 2.5))


def test_upfirdn2d_flips_the_kernel():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    kernel = torch.arange(9.0).view(3, 3)
    # convolution (not correlation): an impulse reproduces the kernel itself
    torch.testing.assert_close(upfirdn2d(x, kernel, pad=(1, 1))[0, 0], kernel)


def test_downsample2d_padding_zero_pads_bottom_right():
    layer = Downsample2D(2, padding=0)
    x = torch.randn(1, 2, 8, 8)
    expected = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.conv.weight, layer.conv.bias, stride=2)
    torch.testing.assert_close(layer(x), expected)
    assert layer(x).shape == (1, 2, 4, 4)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("dim", [8, 9])
def test_sinusoidal_embedding_formula(flip, dim):
    t = torch.tensor([0.0, 3.0, 250.5])
    shift = 1.0
    emb = sinusoidal_embedding(t, dim, flip_sin_to_cos=flip, freq_shift=shift)
    half = dim // 2
    assert emb.shape == (3, dim) and emb.dtype == torch.float32
    for row, value in enumerate(t.tolist()):
        for i in range(half):
            angle = value * math.exp(-math.log(10000) * i / (half - shift))
            sin_col, cos_col = (half + i, i) if flip else (i, half + i)
            assert emb[row, sin_col].item() == pytest.approx(math.sin(angle), abs=1e-4)
            assert emb[row, cos_col].item() == pytest.approx(math.cos(angle), abs=1e-4)
    if dim % 2:
        assert torch.all(emb[:, -1] == 0)


def test_sinusoidal_embedding_rejects_batched_shapes():
    with pytest.raises(ValueError, match="1-D"):
        sinusoidal_embedding(torch.zeros(2, 1), 8)


def test_gaussian_fourier_projection_formula():
    proj = GaussianFourierProjection(4, scale=1.0)
    sigma = torch.tensor([0.5, 2.0])
    angles = torch.log(sigma)[:, None] * proj.weight[None] * 2 * math.pi
    torch.testing.assert_close(proj(sigma), torch.cat([angles.sin(), angles.cos()], dim=-1))
    assert proj.weight.requires_grad is False


@pytest.mark.parametrize("norm", ["default", "scale_shift"])
def test_resnet_time_conditioning(norm):
    block = ResnetBlock2D(8, 16, 12, groups=4, time_embedding_norm=norm).eval()
    assert block.time_emb_proj.out_features == (32 if norm == "scale_shift" else 16)
    x, temb = torch.randn(2, 8, 4, 4), torch.randn(2, 12)
    h = block.conv1(F.silu(block.norm1(x)))
    t = block.time_emb_proj(F.silu(temb))[:, :, None, None]
    if norm == "default":
        h = block.norm2(h + t)
    else:
        scale, shift = t.chunk(2, dim=1)
        h = block.norm2(h) * (1 + scale) + shift
    expected = block.conv_shortcut(x) + block.conv2(F.silu(h))
    torch.testing.assert_close(block(x, temb), expected)


@pytest.mark.parametrize(
    ("resample", "fir", "size"), [("up", False, 8), ("down", False, 2), ("up", True, 8), ("down", True, 2)]
)
def test_resnet_resampling_shapes(resample, fir, size):
    block = ResnetBlock2D(4, 4, 8, groups=2, resample=resample, fir=fir, use_in_shortcut=fir)
    assert block(torch.randn(1, 4, 4, 4), torch.randn(1, 8)).shape == (1, 4, size, size)
    assert (block.conv_shortcut is not None) == fir


def test_resnet_rejects_unknown_time_norm():
    with pytest.raises(ValueError, match="time_embedding_norm"):
        ResnetBlock2D(4, 4, 8, groups=2, time_embedding_norm="spatial")


def test_spatial_attention_matches_softmax_formula():
    torch.manual_seed(0)
    layer = SpatialSelfAttention(8, 4, norm_num_groups=2, rescale_output_factor=2.0).eval()
    x = torch.randn(2, 8, 3, 5)
    tokens = layer.group_norm(x).flatten(2).transpose(1, 2)  # (b, 15, 8)

    def heads(t):
        return t.view(2, 15, 2, 4).transpose(1, 2)

    q, k, v = heads(layer.to_q(tokens)), heads(layer.to_k(tokens)), heads(layer.to_v(tokens))
    attended = torch.softmax(q @ k.transpose(-1, -2) / 2.0, dim=-1) @ v
    out = layer.to_out[0](attended.transpose(1, 2).reshape(2, 15, 8))
    expected = (out.transpose(1, 2).reshape(2, 8, 3, 5) + x) / 2.0
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)


def test_spatial_attention_head_dim_not_dividing_channels():
    layer = SpatialSelfAttention(16, 6, norm_num_groups=None)
    assert (layer.heads, layer.to_q.out_features, layer.to_out[0].in_features) == (2, 12, 12)
    assert layer.group_norm is None
    assert layer(torch.randn(1, 16, 2, 2)).shape == (1, 16, 2, 2)

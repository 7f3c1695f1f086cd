"""UNet1DModel: its layers against direct formulas, config checks, shapes and wiring."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffkit.errors import ConfigError
from diffkit_models_unet.blocks_1d import (
    RESAMPLE_KERNELS,
    KernelDownsample1D,
    KernelUpsample1D,
    ResConvBlock,
    SelfAttention1D,
)
from diffkit_models_unet.embeddings import GaussianFourierProjection
from diffkit_models_unet.temporal_1d import MidResTemporalBlock1D
from diffkit_models_unet.unet_1d import UNet1DConfig, UNet1DModel

DANCE = dict(block_out_channels=(32, 32, 64), extra_in_channels=16, time_embedding_dim=16, sample_rate=8000)
PLANNER = dict(
    down_block_types=("DownResnetBlock1D", "DownResnetBlock1D"),
    up_block_types=("UpResnetBlock1D",),
    mid_block_type="MidResTemporalBlock1D",
    block_out_channels=(8, 16),
    use_timestep_embedding=True,
    out_block_type="OutConv1DBlock",
    act_fn="mish",
    in_channels=3,
    out_channels=3,
    time_embedding_type="positional",
)


@pytest.mark.parametrize("name", list(RESAMPLE_KERNELS))
def test_kernel_downsample_is_a_per_channel_strided_filter(name):
    x = torch.randn(2, 3, 20, generator=torch.Generator().manual_seed(0))
    layer = KernelDownsample1D(name)
    taps = torch.tensor(RESAMPLE_KERNELS[name])
    pad = len(taps) // 2 - 1
    padded = F.pad(x, (pad, pad), mode="reflect")
    # an independent path: every output is a dot product of a window with the taps
    windows = padded.unfold(-1, len(taps), 2)
    expected = (windows * taps).sum(-1)
    out = layer(x)
    assert out.shape == (2, 3, 10)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(layer(torch.full((1, 2, 16), 1.5)), torch.full((1, 2, 8), 1.5))


@pytest.mark.parametrize("name", list(RESAMPLE_KERNELS))
def test_kernel_upsample_doubles_and_keeps_a_constant(name):
    layer = KernelUpsample1D(name)
    x = torch.randn(1, 4, 12, generator=torch.Generator().manual_seed(1))
    assert layer(x).shape == (1, 4, 24)
    torch.testing.assert_close(layer(torch.full((1, 2, 16), -0.75)), torch.full((1, 2, 32), -0.75))
    # each output sample is a weighted sum of one channel only
    y = layer(torch.cat([x[:, :1], torch.zeros(1, 3, 12)], dim=1))
    assert torch.count_nonzero(y[:, 1:]) == 0


def test_self_attention_matches_the_formula():
    gen = torch.Generator().manual_seed(2)
    layer = SelfAttention1D(64)
    assert layer.heads == 2 and layer.head_dim == 32
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=gen))
    x = torch.randn(2, 64, 10, generator=gen)
    h = layer.group_norm(x).transpose(1, 2)

    def heads(t):
        return t.view(2, 10, 2, 32).transpose(1, 2)

    q, k, v = heads(layer.query(h)), heads(layer.key(h)), heads(layer.value(h))
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(32), dim=-1)
    mixed = (weights @ v).transpose(1, 2).reshape(2, 10, 64)
    expected = layer.proj_attn(mixed).transpose(1, 2) + x
    torch.testing.assert_close(layer(x), expected)


def test_self_attention_needs_32_channels_per_head():
    with pytest.raises(ValueError, match="block_out_channels"):
        SelfAttention1D(16)
    with pytest.raises(ValueError, match="divides"):
        SelfAttention1D(100)  # 3 heads do not divide 100 channels


def test_last_res_conv_block_has_no_output_norm():
    assert not hasattr(ResConvBlock(4, 8, 4, is_last=True), "group_norm_2")
    assert ResConvBlock(4, 8, 8).conv_skip is not None and ResConvBlock(8, 8, 8).conv_skip is None


def test_fourier_projection_options():
    proj = GaussianFourierProjection(3, log=False, flip_sin_to_cos=True)
    t = torch.tensor([0.25, 0.5])
    angles = t[:, None] * proj.weight[None, :] * 2 * math.pi
    torch.testing.assert_close(proj(t), torch.cat([angles.cos(), angles.sin()], dim=-1))
    logged = GaussianFourierProjection(3)
    angles = t.log()[:, None] * logged.weight[None, :] * 2 * math.pi
    torch.testing.assert_close(logged(t), torch.cat([angles.sin(), angles.cos()], dim=-1))


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(use_timestep_embedding=True), "act_fn"),
        (dict(out_block_type="OutConv1DBlock"), "act_fn"),
        (dict(up_block_types=("UpBlock1D",) * 4), "up_block_types"),
        (dict(down_block_types=("DownBlock1D",) * 4), "down_block_types"),
        (dict(time_embedding_dim=15), "even"),
        (dict(mid_block_type="UNetMidBlock2D"), "mid_block_type"),
        (dict(out_block_type="ValueHead", act_fn="mish"), "out_block_type"),
    ],
)
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        UNet1DConfig.from_dict(changes, source="unet/config.json")


def test_config_defaults_are_diffusers_and_activation_is_lowercased():
    cfg = UNet1DConfig.from_dict({**PLANNER, "act_fn": "Mish"})
    assert cfg.act_fn == "mish"
    default = UNet1DConfig()
    assert default.sample_size == 65536 and default.in_channels == 2 and default.projection_dim == 64
    assert default.down_block_types == ("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D")


@torch.no_grad()
def test_dance_layout_keeps_the_shape_and_accepts_every_timestep_form():
    torch.manual_seed(0)
    model = UNet1DModel(**DANCE).eval()
    x = torch.randn(2, 2, 32)
    outs = [model(x, t).sample for t in (torch.tensor(0.5), torch.tensor([0.5, 0.5]))]
    assert outs[0].shape == x.shape
    torch.testing.assert_close(outs[0], outs[1])
    (only,) = model(x, torch.tensor(0.5), return_dict=False)
    torch.testing.assert_close(only, outs[0])


@torch.no_grad()
def test_blocks_report_a_missing_or_wrong_time_embedding():
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="use_timestep_embedding=False"):
        UNet1DModel(**DANCE, use_timestep_embedding=True, act_fn="silu")(torch.randn(1, 2, 32), torch.tensor(0.5))
    with pytest.raises(ValueError, match="use_timestep_embedding=True"):
        UNet1DModel(**dict(PLANNER, use_timestep_embedding=False))(torch.randn(1, 3, 16), 3)


@torch.no_grad()
def test_value_function_gives_one_value_per_sample_with_a_shared_timestep():
    torch.manual_seed(0)
    model = UNet1DModel(
        **dict(
            PLANNER,
            down_block_types=("DownResnetBlock1D",) * 2,
            up_block_types=(),
            mid_block_type="ValueFunctionMidBlock1D",
            out_block_type="ValueFunction",
            downsample_each_block=True,
            block_out_channels=(8, 32),
        )
    ).eval()
    assert model(torch.randn(3, 3, 16), 7).sample.shape == (3, 1)


def test_mid_resnet_block_downsamples_when_asked():
    block = MidResTemporalBlock1D(8, 8, 4, add_downsample=True)
    assert block(torch.randn(1, 8, 16), torch.randn(1, 4)).shape == (1, 8, 8)


def test_meta_build_has_diffusers_keys_and_persistent_kernels():
    with torch.device("meta"):
        model = UNet1DModel(**DANCE)
    state = model.state_dict()
    assert all(t.is_meta for t in state.values())
    for key in ("down_blocks.1.down.kernel", "mid_block.down.kernel", "mid_block.up.kernel", "up_blocks.0.up.kernel"):
        assert key in state
    assert "time_proj.weight" in state and state["time_proj.weight"].shape == (8,)
    assert not [name for name, _ in model.named_buffers() if name not in state]


@torch.no_grad()
def test_save_load_roundtrip_and_sliced_attention(tmp_path):
    torch.manual_seed(0)
    model = UNet1DModel(**DANCE).eval()
    model.save_pretrained(tmp_path)
    loaded = UNet1DModel.from_pretrained(tmp_path)
    x, t = torch.randn(1, 2, 32), torch.tensor(0.3)
    expected = model(x, t).sample
    torch.testing.assert_close(loaded(x, t).sample, expected, rtol=0, atol=1e-6)
    loaded.set_attention_backend("sliced", slice_size="max")
    torch.testing.assert_close(loaded(x, t).sample, expected, rtol=0, atol=1e-5)

"""fuse_qkv_projections / unfuse_qkv_projections on UNet2DConditionModel, AutoencoderKL and the SD pipeline.

Fused: one matmul per layer for q, k, v (self-attention) or k, v (cross-attention); outputs
within float rounding of the unfused ones and of diffusers' fused models. Unfused: the state
dict and the outputs are exactly those from before.
"""

from __future__ import annotations

import pytest
import torch

from diffkit import registry

UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
)
VAE = dict(
    block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _unet_pair(tmp_path):
    from diffusers import UNet2DConditionModel as Reference

    torch.manual_seed(0)
    reference = Reference(**UNET).eval()
    reference.save_pretrained(tmp_path / "unet")
    ours = registry.get("model", "UNet2DConditionModel").from_pretrained(tmp_path / "unet")
    return ours, reference


def _vae_pair(tmp_path):
    from diffusers import AutoencoderKL as Reference

    torch.manual_seed(0)
    reference = Reference(**VAE).eval()
    reference.save_pretrained(tmp_path / "vae")
    ours = registry.get("model", "AutoencoderKL").from_pretrained(tmp_path / "vae")
    return ours, reference


def _unet_inputs():
    g = torch.Generator().manual_seed(1)
    return torch.randn(2, 4, 16, 16, generator=g), torch.tensor(321), torch.randn(2, 7, 32, generator=g)


@torch.no_grad()
def test_unet_fused_matches_unfused_and_diffusers_fused(tmp_path):
    ours, reference = _unet_pair(tmp_path)
    sample, t, context = _unet_inputs()
    before_state = {k: v.clone() for k, v in ours.state_dict().items()}
    plain = ours(sample, t, context).sample

    ours.fuse_qkv_projections()
    reference.fuse_qkv_projections()
    layers = [m for m in ours.modules() if hasattr(m, "fused_projections")]
    assert layers and all(m.fused_projections for m in layers)
    # self-attention fuses q, k, v; cross-attention k, v
    widths = {m.is_self_attention: m.fused_weight.shape[0] // (m.heads * m.head_dim) for m in layers}
    assert widths == {True: 3, False: 2}
    assert set(ours.state_dict()) == set(before_state)  # the fused copies are not saved
    fused = ours(sample, t, context).sample
    assert (fused - plain).abs().max() <= 1e-5
    assert (fused - reference(sample, t, context).sample).abs().max() <= 1e-5

    ours.unfuse_qkv_projections()
    assert not any(m.fused_projections for m in layers)
    after_state = ours.state_dict()
    assert list(after_state) == list(before_state)
    assert all(torch.equal(after_state[k], before_state[k]) for k in before_state)
    assert torch.equal(ours(sample, t, context).sample, plain)


@torch.no_grad()
def test_vae_fused_matches_unfused_and_diffusers_fused(tmp_path):
    ours, reference = _vae_pair(tmp_path)
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    plain = ours(image, sample_posterior=False).sample
    keys = list(ours.state_dict())

    ours.fuse_qkv_projections()
    reference.fuse_qkv_projections()
    assert any(getattr(m, "fused_projections", False) for m in ours.modules())
    fused = ours(image, sample_posterior=False).sample
    assert (fused - plain).abs().max() <= 1e-5
    assert (fused - reference(image, sample_posterior=False).sample).abs().max() <= 1e-5

    ours.unfuse_qkv_projections()
    assert list(ours.state_dict()) == keys
    assert torch.equal(ours(image, sample_posterior=False).sample, plain)


def test_fused_weights_follow_dtype_moves_and_saving_ignores_them(tmp_path):
    ours, _ = _unet_pair(tmp_path)
    ours.fuse_qkv_projections()
    ours.to(torch.float64)
    layer = next(m for m in ours.modules() if getattr(m, "fused_projections", False))
    assert layer.fused_weight.dtype == torch.float64
    ours.save_pretrained(tmp_path / "saved")
    from diffusers import UNet2DConditionModel as Reference

    reloaded = Reference.from_pretrained(tmp_path / "saved")  # no unexpected keys, loads as saved
    assert set(reloaded.state_dict()) == set(ours.state_dict())


def test_pipeline_fuse_and_unfuse_reach_unet_and_vae(tmp_path):
    ours_unet, _ = _unet_pair(tmp_path)
    ours_vae, _ = _vae_pair(tmp_path)
    from diffkit import Pipeline

    class Two(Pipeline):
        def __init__(self, unet, vae):
            super().__init__(unet=unet, vae=vae)

    pipe = Two(ours_unet, ours_vae)
    pipe.fuse_qkv_projections(vae=False)
    assert any(getattr(m, "fused_projections", False) for m in ours_unet.modules())
    assert not any(getattr(m, "fused_projections", False) for m in ours_vae.modules())
    pipe.fuse_qkv_projections()
    assert any(getattr(m, "fused_projections", False) for m in ours_vae.modules())
    pipe.unfuse_qkv_projections()
    assert not any(getattr(m, "fused_projections", False) for m in (*ours_unet.modules(), *ours_vae.modules()))

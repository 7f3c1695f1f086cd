"""AutoencoderKL: config checks, the encode/decode contract, slicing and tiling, attention
backends, saving and loading, registry wiring. Parity with diffusers is in tests/parity."""

import pytest
import torch

from diffkit.attention import AttentionBackend
from diffkit.errors import ConfigError
from diffkit_models_autoencoder.autoencoder_kl import AutoencoderKL, AutoencoderKLConfig
from diffkit_models_autoencoder.distribution import DiagonalGaussianDistribution
from diffkit_models_unet.attention import SpatialSelfAttention

TINY = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    norm_num_groups=4,
    latent_channels=2,
    sample_size=16,
)


def _model(**changes) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(**{**TINY, **changes}).eval()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(up_block_types=("UpDecoderBlock2D",)), "up_block_types"),
        (dict(block_out_channels=(8, 18)), "norm_num_groups"),
        (dict(down_block_types=("DownBlock2D", "DownBlock2D")), "down_block_types"),
        (dict(act_fn="tanh"), "act_fn"),
        (dict(scaling_factor=-1.0), "scaling_factor"),
        (dict(latents_mean=(0.0, 1.0, 2.0)), "latents_mean has 3 entries but latent_channels is 2"),
        (dict(latents_std=(1.0,)), "latents_std has 1 entries"),
        (dict(latents_std=(1.0, 0.0)), "latents_std must be positive"),
        (dict(sample_size=(16, 16, 16)), "sample_size"),
        (dict(use_quant_conv="sometimes"), "use_quant_conv"),
    ],
)
def test_bad_configs_name_the_field_and_the_file(changes, message):
    with pytest.raises(ConfigError, match=message) as info:
        AutoencoderKLConfig.from_dict({**TINY, **changes}, source="vae/config.json")
    assert "vae/config.json" in str(info.value)


def test_defaults_are_diffusers():
    cfg = AutoencoderKLConfig()
    assert cfg.latent_channels == 4 and cfg.block_out_channels == (64,) and cfg.norm_num_groups == 32
    assert cfg.scaling_factor == 0.18215 and cfg.shift_factor is None
    assert cfg.latents_mean is None and cfg.latents_std is None
    assert cfg.force_upcast and cfg.use_quant_conv and cfg.use_post_quant_conv and cfg.mid_block_add_attention
    assert cfg.act_fn == "silu" and cfg.sample_size == 32 and cfg.layers_per_block == 1


def test_tile_sizes_follow_sample_size_and_levels():
    three_levels = dict(down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3)
    model = _model(sample_size=64, block_out_channels=(8, 8, 16), **three_levels)
    assert (model.tile_sample_min_size, model.tile_latent_min_size, model.tile_overlap_factor) == (64, 16, 0.25)
    pair = _model(sample_size=(24, 32))
    assert (pair.tile_sample_min_size, pair.tile_latent_min_size) == (24, 12)
    assert pair.config.to_dict()["sample_size"] == [24, 32]


@torch.no_grad()
def test_encode_decode_shapes_and_paths():
    model = _model()
    images = torch.randn(2, 3, 8, 12)
    posterior = model.encode(images).latent_dist
    assert isinstance(posterior, DiagonalGaussianDistribution)
    assert posterior.mean.shape == posterior.std.shape == (2, 2, 4, 6)
    moments = model.quant_conv(model.encoder(images))
    torch.testing.assert_close(posterior.parameters, moments, rtol=0, atol=0)
    (same,) = model.encode(images, return_dict=False)
    torch.testing.assert_close(same.mean, posterior.mean)

    latents = posterior.mode()
    decoded = model.decode(latents).sample
    assert decoded.shape == (2, 3, 8, 12)
    torch.testing.assert_close(decoded, model.decoder(model.post_quant_conv(latents)), rtol=0, atol=0)
    (tuple_out,) = model.decode(latents, return_dict=False, generator=torch.Generator())
    torch.testing.assert_close(tuple_out, decoded)

    torch.testing.assert_close(model(images).sample, decoded)
    (forward_tuple,) = model(images, return_dict=False)
    torch.testing.assert_close(forward_tuple, decoded)
    drawn = model(images, sample_posterior=True, generator=torch.Generator().manual_seed(1)).sample
    expected = model.decode(posterior.sample(torch.Generator().manual_seed(1))).sample
    torch.testing.assert_close(drawn, expected, rtol=0, atol=0)


@torch.no_grad()
def test_quant_convs_can_be_left_out():
    model = _model(use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=False)
    assert model.quant_conv is None and model.post_quant_conv is None
    assert not any(key.startswith(("quant_conv", "post_quant_conv")) for key in model.state_dict())
    assert not any("mid_block.attentions" in key for key in model.state_dict())
    images = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(model.encode(images).latent_dist.parameters, model.encoder(images), rtol=0, atol=0)
    latents = torch.randn(1, 2, 4, 4)
    torch.testing.assert_close(model.decode(latents).sample, model.decoder(latents), rtol=0, atol=0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m: m.encode(torch.randn(1, 4, 8, 8)), r"x must have shape \(batch, 3, h.*; got \(1, 4, 8, 8\)"),
        (lambda m: m.encode(torch.randn(3, 8, 8)), "x must have shape"),
        (lambda m: m.decode(torch.randn(1, 3, 4, 4)), r"z must have shape \(batch, 2, height, width\)"),
        (lambda m: m.tiled_decode(torch.randn(2, 4, 4)), "z must have shape"),
    ],
)
def test_wrong_input_shapes_name_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call(_model())


def test_tile_settings_without_stride_are_refused():
    model = _model()
    model.enable_tiling()
    model.tile_latent_min_size = 1
    with pytest.raises(ValueError, match="tile_latent_min_size"):
        model.decode(torch.randn(1, 2, 4, 4))
    model.tile_latent_min_size = 8
    model.tile_overlap_factor = 1.0
    with pytest.raises(ValueError, match="tile_overlap_factor"):
        model.decode(torch.randn(1, 2, 12, 12))


@torch.no_grad()
def test_slicing_runs_each_image_alone():
    model = _model()
    images = torch.randn(3, 3, 8, 8)
    seen = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    whole = model.encode(images).latent_dist.mean
    model.enable_slicing()
    sliced = model.encode(images).latent_dist.mean
    hook.remove()
    assert seen == [3, 1, 1, 1]
    torch.testing.assert_close(sliced, whole, rtol=1e-5, atol=1e-6)
    latents = torch.randn(3, 2, 4, 4)
    sliced_images = model.decode(latents).sample
    model.disable_slicing()
    torch.testing.assert_close(sliced_images, model.decode(latents).sample, rtol=1e-5, atol=1e-6)


@torch.no_grad()
def test_tiling_tiles_only_inputs_above_the_tile_size():
    model = _model()
    model.enable_tiling()
    model.tile_sample_min_size, model.tile_latent_min_size = 16, 8
    calls = []
    hook = model.encoder.register_forward_pre_hook(lambda module, args: calls.append(tuple(args[0].shape[-2:])))
    model.encode(torch.randn(1, 3, 16, 16))
    assert calls == [(16, 16)]
    calls.clear()
    model.encode(torch.randn(1, 3, 28, 16))
    # a 16 px tile every 12 px: rows start at 0, 12, 24; columns at 0, 12
    assert calls == [(16, 16), (16, 4), (16, 16), (16, 4), (4, 16), (4, 4)]
    hook.remove()
    posterior = model.encode(torch.randn(2, 3, 28, 20)).latent_dist
    assert posterior.mean.shape == (2, 2, 14, 10)
    assert model.decode(posterior.mode()).sample.shape == (2, 3, 28, 20)


class _CountingBackend(AttentionBackend):
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, query, key, value, attn_mask=None, scale=None):
        self.calls += 1
        weights = torch.softmax(query @ key.transpose(-1, -2) * scale, dim=-1)
        return weights @ value


@torch.no_grad()
def test_attention_runs_through_the_backend():
    model = _model()
    layers = [m for m in model.modules() if isinstance(m, SpatialSelfAttention)]
    assert len(layers) == 1 + 2 + 2  # per resnet of the attention levels (encoder 1, decoder 2), two mid blocks
    images = torch.randn(1, 3, 8, 8)
    reference = model(images).sample
    backend = _CountingBackend()
    assert model.set_attention_backend(backend) is backend
    out = model(images).sample
    assert backend.calls == len(layers)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_save_and_load_round_trip(tmp_path):
    model = _model(shift_factor=0.1, latents_mean=(0.5, -0.5), latents_std=(2.0, 3.0), force_upcast=False)
    model.save_pretrained(tmp_path)
    loaded = AutoencoderKL.from_pretrained(tmp_path)
    assert loaded.config.model_dump() == model.config.model_dump()
    images = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded(images).sample, model(images).sample, rtol=0, atol=0)
    half = AutoencoderKL.from_pretrained(tmp_path, torch_dtype=torch.float16)
    assert half.dtype == torch.float16 and half.encoder.conv_in.weight.dtype == torch.float16


def test_meta_build_creates_no_real_tensors():
    with torch.device("meta"):
        model = AutoencoderKL(**TINY)
    assert all(t.is_meta for t in model.state_dict().values())


def test_installed_registry_resolves_the_model(diffkit_installed_registry):
    assert diffkit_installed_registry.get("model", "AutoencoderKL") is AutoencoderKL
    assert diffkit_installed_registry.entry("model", "AutoencoderKL").dist == "diffkit-models-autoencoder"


@torch.no_grad()
def test_concurrent_calls_give_the_sequential_results():
    """Encoding and decoding keep nothing per call on the model, so threads may share it."""
    from concurrent.futures import ThreadPoolExecutor

    model = _model()
    model.enable_tiling()
    model.tile_sample_min_size, model.tile_latent_min_size = 16, 8
    inputs = [torch.randn(1, 3, 8 * (i + 1), 24, generator=torch.Generator().manual_seed(i)) for i in range(4)]

    def run(images: torch.Tensor) -> torch.Tensor:
        latents = model.encode(images).latent_dist.sample(torch.Generator().manual_seed(images.shape[2]))
        return model.decode(latents).sample

    sequential = [run(images) for images in inputs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, inputs * 2))
    for got, expected in zip(concurrent, sequential * 2, strict=True):
        assert torch.equal(got, expected)

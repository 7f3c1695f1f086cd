"""Parity of diffkit's AutoencoderKL with diffusers' on tiny random checkpoints.

diffusers builds each config (hypothesis draws widths, latent channels, levels, layers per
block, norm groups, activation and the quant-conv and mid-attention switches; one fixed
config has Stable Diffusion 1.x's layout at a tiny width), saves it, diffkit loads it, and
both encode (posterior mean, std and a seeded draw), decode and run forward on the same
inputs. Slicing and tiling are compared with tile sizes small enough that 32-64 pixel
images really are tiled, set the way a diffusers user sets them. diffusers loads what
diffkit saves and gives the same numbers.
"""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

diffusers = pytest.importorskip("diffusers")

from diffkit_models_autoencoder.autoencoder_kl import AutoencoderKL  # noqa: E402

ATOL = 1e-5

#: Stable Diffusion 1.x's VAE layout (four levels, two resnets per level, mid attention, quant convs),
#: with widths divided by 16 and norm groups by 8
SD_LIKE = dict(
    block_out_channels=(8, 16, 32, 32),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
)


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster on one thread than split across cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial GroupNorm affines, so that every parameter changes the output."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))


def _diffusers_model(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.AutoencoderKL(**config).eval()
    _randomise_norms(model, seed)
    return model


def _images(config: dict, batch: int = 2, size: tuple[int, int] = (16, 16), seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, config.get("in_channels", 3), *size, generator=gen)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


def _load_ours(theirs, folder) -> AutoencoderKL:
    theirs.save_pretrained(folder)
    ours = AutoencoderKL.from_pretrained(folder)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}
    return ours


def _assert_same_model_outputs(ours, theirs, config: dict, size: tuple[int, int]) -> None:
    images = _images(config, size=size)
    expected = theirs.encode(images).latent_dist
    got = ours.encode(images).latent_dist
    for name in ("mean", "std", "var", "logvar"):
        assert _max_diff(getattr(got, name), getattr(expected, name)) <= ATOL, name
    assert _max_diff(got.mode(), expected.mode()) <= ATOL
    assert _max_diff(got.kl(), expected.kl()) <= ATOL * max(1.0, expected.kl().abs().max().item())
    drawn = got.sample(generator=torch.Generator().manual_seed(7))
    assert _max_diff(drawn, expected.sample(generator=torch.Generator().manual_seed(7))) <= ATOL
    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    same_generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    assert _max_diff(got.sample(generator=generators), expected.sample(generator=same_generators)) <= ATOL

    latents = expected.mode()
    assert _max_diff(ours.decode(latents).sample, theirs.decode(latents).sample) <= ATOL
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL
    got = ours(images, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
    expected = theirs(images, sample_posterior=True, generator=torch.Generator().manual_seed(3)).sample
    assert _max_diff(got, expected) <= ATOL


@torch.no_grad()
def test_sd_like_config_matches(tmp_path):
    theirs = _diffusers_model(SD_LIKE)
    ours = _load_ours(theirs, tmp_path)
    assert ours.tile_sample_min_size == theirs.tile_sample_min_size == 32
    assert ours.tile_latent_min_size == theirs.tile_latent_min_size == 4
    _assert_same_model_outputs(ours, theirs, SD_LIKE, size=(16, 24))
    (posterior,) = ours.encode(_images(SD_LIKE), return_dict=False)
    (images,) = ours.decode(posterior.mode(), return_dict=False)
    assert images.shape == (2, 3, 16, 16)


@st.composite
def kl_configs(draw) -> dict:
    levels = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 4]))
    widths = tuple(groups * draw(st.integers(1, 4)) for _ in range(levels))
    down = tuple(draw(st.sampled_from(["DownEncoderBlock2D", "AttnDownEncoderBlock2D"])) for _ in range(levels))
    up = tuple(draw(st.sampled_from(["UpDecoderBlock2D", "AttnUpDecoderBlock2D"])) for _ in range(levels))
    return dict(
        in_channels=draw(st.integers(1, 3)),
        out_channels=draw(st.integers(1, 3)),
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        layers_per_block=draw(st.integers(1, 2)),
        latent_channels=draw(st.integers(1, 4)),
        norm_num_groups=groups,
        act_fn=draw(st.sampled_from(["silu", "gelu", "mish", "relu"])),
        use_quant_conv=draw(st.booleans()),
        use_post_quant_conv=draw(st.booleans()),
        mid_block_add_attention=draw(st.booleans()),
    )


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(config=kl_configs())
@torch.no_grad()
def test_drawn_configs_match(tmp_path_factory, config):
    theirs = _diffusers_model(config)
    ours = _load_ours(theirs, tmp_path_factory.mktemp("vae"))
    _assert_same_model_outputs(ours, theirs, config, size=(8, 12))


#: two levels (latents at half size), mid attention and an attention level, quant convs on
TILING = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=64,
)


def _set_tiles(model, sample: int, latent: int) -> None:
    """Small tiles, set on the model as a diffusers user would."""
    model.enable_tiling()
    model.tile_sample_min_size = sample
    model.tile_latent_min_size = latent


@torch.no_grad()
def test_slicing_matches_and_changes_nothing(tmp_path):
    theirs = _diffusers_model(SD_LIKE)
    ours = _load_ours(theirs, tmp_path)
    images = _images(SD_LIKE, batch=3, size=(16, 16))
    whole = ours.encode(images).latent_dist.mean
    latents = theirs.encode(images).latent_dist.mode()
    whole_decoded = ours.decode(latents).sample
    theirs.enable_slicing()
    ours.enable_slicing()
    assert ours.use_slicing
    sliced = ours.encode(images).latent_dist
    assert _max_diff(sliced.mean, theirs.encode(images).latent_dist.mean) <= ATOL
    assert _max_diff(sliced.mean, whole) <= ATOL
    decoded = ours.decode(latents).sample
    assert _max_diff(decoded, theirs.decode(latents).sample) <= ATOL
    assert _max_diff(decoded, whole_decoded) <= ATOL
    ours.disable_slicing()
    assert not ours.use_slicing


@pytest.mark.parametrize(
    "size, tiles",
    [
        ((32, 32), (16, 8)),  # a 2x2 grid of full tiles plus thin edge tiles
        ((48, 40), (16, 8)),  # more rows than columns, partial tiles at both edges
        ((64, 64), (32, 16)),  # the default overlap at a larger tile size
        ((40, 56), (24, 12)),  # tiles that do not divide the image
    ],
)
@torch.no_grad()
def test_tiled_encode_and_decode_match(tmp_path, size, tiles):
    theirs = _diffusers_model(TILING)
    ours = _load_ours(theirs, tmp_path)
    images = _images(TILING, batch=1, size=size, seed=4)
    untiled = ours.encode(images).latent_dist.mean
    for model in (theirs, ours):
        _set_tiles(model, *tiles)

    expected = theirs.encode(images).latent_dist
    got = ours.encode(images).latent_dist
    assert got.mean.shape == untiled.shape
    assert (got.mean - untiled).abs().max() > 1e-4, "the image should really have been tiled"
    assert _max_diff(got.mean, expected.mean) <= ATOL
    assert _max_diff(got.std, expected.std) <= ATOL

    latents = expected.mode()
    ours.disable_tiling()
    untiled_images = ours.decode(latents).sample
    ours.enable_tiling()
    expected_images = theirs.decode(latents).sample
    got_images = ours.decode(latents).sample
    assert (got_images - untiled_images).abs().max() > 1e-4, "the latents should really have been tiled"
    assert _max_diff(got_images, expected_images) <= ATOL
    assert _max_diff(ours.tiled_decode(latents).sample, theirs.tiled_decode(latents).sample) <= ATOL
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL


@torch.no_grad()
def test_tiling_with_slicing_and_small_inputs(tmp_path):
    """Slicing and tiling together split the batch first; inputs within one tile are not tiled."""
    theirs = _diffusers_model(TILING)
    ours = _load_ours(theirs, tmp_path)
    images = _images(TILING, batch=2, size=(40, 32), seed=5)
    small = _images(TILING, batch=2, size=(16, 16), seed=6)
    for model in (theirs, ours):
        model.enable_slicing()
    untiled_small = ours.encode(small).latent_dist.mean
    for model in (theirs, ours):
        _set_tiles(model, 16, 8)
    assert _max_diff(ours.encode(images).latent_dist.mean, theirs.encode(images).latent_dist.mean) <= ATOL
    latents = theirs.encode(images).latent_dist.mode()
    assert _max_diff(ours.decode(latents).sample, theirs.decode(latents).sample) <= ATOL
    assert torch.equal(ours.encode(small).latent_dist.mean, untiled_small)
    ours.disable_tiling()
    assert not ours.use_tiling


@pytest.mark.parametrize("switches", [dict(), dict(use_quant_conv=False, use_post_quant_conv=False)])
@torch.no_grad()
def test_diffusers_loads_diffkit_checkpoint_and_matches(tmp_path, switches):
    config = dict(
        SD_LIKE,
        **switches,
        scaling_factor=0.13025,
        shift_factor=0.0609,
        latents_mean=(0.1, -0.2, 0.3, 0.0),
        latents_std=(1.0, 0.5, 2.0, 1.5),
        force_upcast=False,
    )
    torch.manual_seed(1)
    ours = AutoencoderKL(**config).eval()
    _randomise_norms(ours, 1)
    ours.save_pretrained(tmp_path)

    theirs = diffusers.AutoencoderKL.from_pretrained(tmp_path).eval()
    assert set(theirs.state_dict()) == set(ours.state_dict())
    for key, value in ours.config.model_dump().items():
        loaded = theirs.config[key]
        assert (list(loaded) if isinstance(loaded, (list, tuple)) else loaded) == (
            list(value) if isinstance(value, tuple) else value
        ), key
    images = _images(config, size=(16, 16), seed=2)
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL


@torch.no_grad()
def test_checkpoint_with_legacy_attention_names_loads(tmp_path):
    """Old SD VAE checkpoints name the mid-block attention projections query/key/value/proj_attn."""
    theirs = _diffusers_model(SD_LIKE)
    theirs.save_pretrained(tmp_path)
    weights = tmp_path / "diffusion_pytorch_model.safetensors"
    legacy_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, tensor in load_file(weights).items():
        for new, old in legacy_names.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{old}.")
        renamed[key] = tensor
    assert any(".proj_attn." in key for key in renamed)
    save_file(renamed, weights, metadata={"format": "pt"})

    ours = AutoencoderKL.from_pretrained(tmp_path)
    images = _images(SD_LIKE, size=(16, 16), seed=1)
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL


@pytest.mark.parametrize("dtype, atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@torch.no_grad()
def test_half_precision_matches(tmp_path, dtype, atol):
    """Loaded in half precision on the CPU, plain and tiled, both libraries agree (to a few ulps)."""
    _diffusers_model(TILING).save_pretrained(tmp_path)
    theirs = diffusers.AutoencoderKL.from_pretrained(tmp_path, torch_dtype=dtype).eval()
    ours = AutoencoderKL.from_pretrained(tmp_path, torch_dtype=dtype)
    assert ours.dtype == dtype
    images = _images(TILING, batch=1, size=(32, 24), seed=8).to(dtype)
    assert _max_diff(ours(images).sample, theirs(images).sample) <= atol
    for model in (theirs, ours):
        _set_tiles(model, 16, 8)
    expected = theirs.encode(images).latent_dist
    got = ours.encode(images).latent_dist
    assert _max_diff(got.mean, expected.mean) <= atol
    noise_seed = torch.Generator().manual_seed(9)
    assert _max_diff(got.sample(noise_seed), expected.sample(torch.Generator().manual_seed(9))) <= atol
    latents = expected.mode()
    assert _max_diff(ours.decode(latents).sample, theirs.decode(latents).sample) <= atol


#: the published Stable Diffusion VAE configs at full size: 1.x (512), 2.x (768), XL (1024)
FULL_SIZE = dict(
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=32,
)


@pytest.mark.parametrize("sample_size, scaling_factor", [(512, 0.18215), (768, 0.18215), (1024, 0.13025)])
def test_full_size_sd_vae_layout_matches(sample_size, scaling_factor):
    """Built on the meta device (no memory): same keys, shapes and tile sizes as diffusers."""
    config = dict(FULL_SIZE, sample_size=sample_size, scaling_factor=scaling_factor)
    with torch.device("meta"):
        theirs = diffusers.AutoencoderKL(**config)
        ours = AutoencoderKL(**config)
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}
    assert sum(shape.numel() for shape in shapes.values()) == 83_653_863
    assert (ours.tile_sample_min_size, ours.tile_latent_min_size) == (
        theirs.tile_sample_min_size,
        theirs.tile_latent_min_size,
    )
    assert ours.config.downscale_factor == 8

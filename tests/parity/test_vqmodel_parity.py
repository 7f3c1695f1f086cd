"""Parity of diffkit's VQModel with diffusers' on tiny random checkpoints.

diffusers builds each config (with a spread-out codebook, so that quantization picks many
different entries), saves it, diffkit loads it, and both encode, quantize and decode the same
images. The grid covers both encoder and decoder block types, MoVQ's spatial norm, a codebook
width other than the latent width and the switches of ``mid_block_add_attention``; decode
is checked with and without quantization and with codebook lookup. Checkpoints with the
pre-0.15 attention parameter names, and diffusers loading what diffkit saved, are covered too.
"""

import pytest
import torch
from safetensors.torch import load_file, save_file

diffusers = pytest.importorskip("diffusers")

from diffkit_models_autoencoder.vq_model import VQModel  # noqa: E402

ATOL = 1e-5

BASE = dict(
    block_out_channels=(32, 64),
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    latent_channels=4,
    norm_num_groups=8,
    num_vq_embeddings=32,
    sample_size=16,
)
CONFIGS = {
    "ldm-like-group-norm": dict(
        BASE, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=3
    ),
    "attention-blocks-two-layers": dict(BASE, layers_per_block=2),
    "movq-spatial-norm": dict(BASE, norm_type="spatial", norm_num_groups=32),
    "codebook-width-no-mid-attention-gelu": dict(BASE, vq_embed_dim=6, mid_block_add_attention=False, act_fn="gelu"),
    "three-levels-in-out-channels": dict(
        BASE,
        block_out_channels=(16, 16, 32),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        in_channels=1,
        out_channels=2,
        scaling_factor=0.5,
    ),
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run faster on one thread than split across cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise(model: torch.nn.Module, seed: int, config: dict) -> None:
    """Non-trivial norm affines and a codebook spread like the latents, so every part is exercised."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.GroupNorm):
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=gen))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=gen))
        latents = model.encode(_images(config, seed=seed)).latents
        codebook = model.quantize.embedding.weight
        spread = latents.std(dim=(0, 2, 3))
        codebook.copy_(latents.mean(dim=(0, 2, 3)) + spread * torch.randn(codebook.shape, generator=gen))


def _diffusers_model(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.VQModel(**config).eval()
    _randomise(model, seed, config)
    return model


def _images(config: dict, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, config.get("in_channels", 3), 16, 16, generator=gen)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
@torch.no_grad()
def test_diffkit_loads_diffusers_checkpoint_and_matches(tmp_path, name):
    config = CONFIGS[name]
    theirs = _diffusers_model(config)
    theirs.save_pretrained(tmp_path)
    ours = VQModel.from_pretrained(tmp_path)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}

    images = _images(config)
    latents = theirs.encode(images).latents
    assert _max_diff(ours.encode(images).latents, latents) <= ATOL
    _, _, (_, _, indices) = theirs.quantize(latents)
    assert indices.unique().numel() > 4, "the codebook should be exercised"

    expected = theirs(images)
    got = ours(images)
    assert _max_diff(got.sample, expected.sample) <= ATOL
    assert _max_diff(got.commit_loss, expected.commit_loss) <= ATOL
    for force in (False, True):
        expected = theirs.decode(latents, force_not_quantize=force)
        got = ours.decode(latents, force_not_quantize=force)
        assert _max_diff(got.sample, expected.sample) <= ATOL
        assert _max_diff(got.commit_loss, expected.commit_loss) <= ATOL
    tuple_out = ours(images, return_dict=False)
    assert len(tuple_out) == 2 and _max_diff(tuple_out[0], theirs(images).sample) <= ATOL


@torch.no_grad()
def test_lookup_from_codebook_matches(tmp_path):
    config = dict(CONFIGS["attention-blocks-two-layers"], lookup_from_codebook=True)
    theirs = _diffusers_model(config)
    theirs.save_pretrained(tmp_path)
    ours = VQModel.from_pretrained(tmp_path)
    indices = torch.randint(0, config["num_vq_embeddings"], (2 * 8 * 8,), generator=torch.Generator().manual_seed(3))
    shape = (2, 8, 8, config["latent_channels"])
    expected = theirs.decode(indices, force_not_quantize=True, shape=shape)
    got = ours.decode(indices, force_not_quantize=True, shape=shape)
    assert _max_diff(got.sample, expected.sample) <= ATOL
    assert torch.equal(got.commit_loss, expected.commit_loss)


@torch.no_grad()
def test_checkpoint_with_legacy_attention_names_loads(tmp_path):
    """Old VQ checkpoints name the attention projections query/key/value/proj_attn."""
    config = CONFIGS["attention-blocks-two-layers"]
    theirs = _diffusers_model(config)
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

    ours = VQModel.from_pretrained(tmp_path)
    images = _images(config, seed=1)
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL


@pytest.mark.parametrize("name", ["movq-spatial-norm", "codebook-width-no-mid-attention-gelu"])
@torch.no_grad()
def test_diffusers_loads_diffkit_checkpoint_and_matches(tmp_path, name):
    config = CONFIGS[name]
    torch.manual_seed(1)
    ours = VQModel(**config).eval()
    _randomise(ours, 1, config)
    ours.save_pretrained(tmp_path)

    theirs = diffusers.VQModel.from_pretrained(tmp_path).eval()
    assert set(theirs.state_dict()) == set(ours.state_dict())
    for key, value in ours.config.model_dump().items():
        loaded = theirs.config[key]
        assert (list(loaded) if isinstance(loaded, (list, tuple)) else loaded) == (
            list(value) if isinstance(value, tuple) else value
        ), key
    images = _images(config, seed=2)
    assert _max_diff(ours(images).sample, theirs(images).sample) <= ATOL

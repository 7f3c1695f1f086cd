"""VQModel: config checks, the encode/quantize/decode contract, saving and loading, wiring."""

import subprocess
import sys

import pytest
import torch

from diffkit.errors import ConfigError
from diffkit_models_autoencoder import hooks
from diffkit_models_autoencoder.decoder import Decoder
from diffkit_models_autoencoder.vq_model import VQModel, VQModelConfig

TINY = dict(
    block_out_channels=(8, 16),
    down_block_types=("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    up_block_types=("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    norm_num_groups=4,
    num_vq_embeddings=10,
    latent_channels=3,
)


def _model(**changes) -> VQModel:
    torch.manual_seed(0)
    return VQModel(**{**TINY, **changes}).eval()


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(up_block_types=("UpDecoderBlock2D",)), "up_block_types"),
        (dict(block_out_channels=(8, 18)), "norm_num_groups"),
        (dict(norm_type="batch"), "norm_type"),
        (dict(down_block_types=("DownBlock2D", "DownBlock2D")), "down_block_types"),
        (dict(scaling_factor=0), "scaling_factor"),
    ],
)
def test_bad_configs_name_the_field(changes, message):
    with pytest.raises(ConfigError, match=message):
        VQModelConfig.from_dict({**TINY, **changes}, source="vqvae/config.json")


def test_defaults_are_diffusers():
    cfg = VQModelConfig()
    assert cfg.block_out_channels == (64,) and cfg.scaling_factor == 0.18215 and cfg.num_vq_embeddings == 256
    assert cfg.codebook_dim == cfg.latent_channels == 3
    assert VQModelConfig(vq_embed_dim=5).codebook_dim == 5


@torch.no_grad()
def test_encode_quantize_decode_shapes_and_paths():
    model = _model(vq_embed_dim=5)
    images = torch.randn(2, 3, 8, 8)
    latents = model.encode(images).latents
    assert latents.shape == (2, 5, 4, 4)
    (same,) = model.encode(images, return_dict=False)
    torch.testing.assert_close(same, latents)

    out = model.decode(latents)
    assert out.sample.shape == (2, 3, 8, 8) and out.commit_loss.ndim == 0
    quantized, _, _ = model.quantize(latents)
    torch.testing.assert_close(out.sample, model.decoder(model.post_quant_conv(quantized)))

    raw = model.decode(latents, force_not_quantize=True)
    torch.testing.assert_close(raw.sample, model.decoder(model.post_quant_conv(latents)))
    assert torch.equal(raw.commit_loss, torch.zeros(2))

    sample, loss = model(images, return_dict=False)
    torch.testing.assert_close(sample, out.sample)
    torch.testing.assert_close(loss, out.commit_loss)


@torch.no_grad()
def test_codebook_lookup_decodes_indices():
    model = _model(lookup_from_codebook=True)
    indices = torch.tensor([1, 4, 4, 9] * 2)
    shape = (2, 2, 2, 3)
    got = model.decode(indices, force_not_quantize=True, shape=shape).sample
    entries = model.quantize.embedding.weight[indices].view(shape).permute(0, 3, 1, 2)
    torch.testing.assert_close(got, model.decoder(model.post_quant_conv(entries)))


def test_spatial_decoder_needs_the_quantized_latents():
    torch.manual_seed(0)
    decoder = Decoder(3, 3, ("UpDecoderBlock2D",), (32,), 1, 32, "silu", norm_type="spatial")
    with pytest.raises(ValueError, match="quantized latents"):
        decoder(torch.randn(1, 3, 4, 4))
    assert decoder(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4)).shape == (1, 3, 4, 4)


@torch.no_grad()
def test_save_and_load_round_trip(tmp_path):
    model = _model(norm_type="spatial", block_out_channels=(32, 32), norm_num_groups=32)
    model.save_pretrained(tmp_path)
    loaded = VQModel.from_pretrained(tmp_path)
    assert loaded.config.norm_type == "spatial"
    images = torch.randn(1, 3, 8, 8)
    torch.testing.assert_close(loaded(images).sample, model(images).sample, rtol=0, atol=1e-6)


def test_legacy_attention_names_are_renamed():
    state = {
        "encoder.mid_block.attentions.0.query.weight": torch.zeros(1),
        "decoder.up_blocks.0.attentions.1.proj_attn.bias": torch.zeros(1),
        "quantize.embedding.weight": torch.zeros(1),
    }
    renamed = VQModel.convert_state_dict(state, VQModelConfig())
    assert sorted(renamed) == [
        "decoder.up_blocks.0.attentions.1.to_out.0.bias",
        "encoder.mid_block.attentions.0.to_q.weight",
        "quantize.embedding.weight",
    ]


def test_hooks_register_by_module_path_without_importing_torch():
    registered = []
    hooks.register_models(lambda name, target, **meta: registered.append((name, target)))
    assert registered == [
        ("AutoencoderKL", "diffkit_models_autoencoder.autoencoder_kl:AutoencoderKL"),
        ("VQModel", "diffkit_models_autoencoder.vq_model:VQModel"),
    ]
    heavy = ("torch", "diffkit_models_autoencoder.vq_model", "diffkit_models_autoencoder.autoencoder_kl")
    code = (
        "import sys, diffkit_models_autoencoder.hooks; "
        f"heavy = [m for m in {heavy!r} if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_installed_registry_resolves_the_model(diffkit_installed_registry):
    assert diffkit_installed_registry.get("model", "VQModel") is VQModel
    assert diffkit_installed_registry.entry("model", "VQModel").dist == "diffkit-models-autoencoder"

"""UNet2DModel without diffusers: shapes, conditioning, dtypes, saving/loading, attention backends."""

import json

import pytest
import torch
from safetensors.torch import save_file

import diffkit.attention
from diffkit.attention import AttentionBackend
from diffkit.errors import CheckpointError
from diffkit_models_unet.attention import SpatialSelfAttention
from diffkit_models_unet.unet_2d import UNet2DModel, UNet2DOutput, legacy_attention_key

PLAIN = dict(
    sample_size=16,
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    layers_per_block=1,
    norm_num_groups=8,
    attention_head_dim=8,
)
SKIP = dict(
    sample_size=16,
    block_out_channels=(32, 64),
    down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
    up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"),
    layers_per_block=1,
    time_embedding_type="fourier",
)
RESNET_SAMPLING = dict(
    PLAIN,
    down_block_types=("ResnetDownsampleBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "ResnetUpsampleBlock2D"),
    block_out_channels=(16, 32, 32),
    downsample_type="resnet",
    upsample_type="resnet",
    resnet_time_scale_shift="scale_shift",
    num_class_embeds=5,
)


def _model(**config) -> UNet2DModel:
    torch.manual_seed(0)
    return UNet2DModel(**config).eval()


def _timesteps(config):
    return torch.tensor([0.5, 3.0]) if config.get("time_embedding_type") == "fourier" else torch.tensor([3, 40])


def _labels(config):
    return torch.tensor([1, 4]) if config.get("num_class_embeds") else None


@pytest.mark.parametrize(
    ("config", "in_ch", "out_ch", "size"),
    [
        (PLAIN, 3, 3, (16, 16)),
        (dict(PLAIN, in_channels=1, out_channels=2), 1, 2, (16, 8)),
        (SKIP, 3, 3, (16, 16)),
        (RESNET_SAMPLING, 3, 3, (8, 12)),
    ],
    ids=["plain", "channels-nonsquare", "skip-fourier", "resnet-sampling"],
)
@torch.no_grad()
def test_output_shape(config, in_ch, out_ch, size):
    model = _model(**config)
    x = torch.randn(2, in_ch, *size)
    out = model(x, _timesteps(config), class_labels=_labels(config))
    assert isinstance(out, UNet2DOutput)
    assert out.sample.shape == (2, out_ch, *size)
    assert torch.isfinite(out.sample).all()
    (as_tuple,) = model(x, _timesteps(config), class_labels=_labels(config), return_dict=False)
    torch.testing.assert_close(as_tuple, out.sample, rtol=0, atol=0)


@torch.no_grad()
def test_timestep_forms_agree():
    model = _model(**PLAIN)
    x = torch.randn(2, 3, 16, 16)
    reference = model(x, torch.tensor([7, 7])).sample
    for form in (7, torch.tensor(7), torch.tensor([7])):
        torch.testing.assert_close(model(x, form).sample, reference, rtol=0, atol=0)
    assert not torch.equal(model(x, 8).sample, reference)


@torch.no_grad()
def test_class_conditioning_changes_output_and_is_required():
    model = _model(**RESNET_SAMPLING)
    x = torch.randn(2, 3, 8, 8)
    a = model(x, 10, class_labels=torch.tensor([0, 0])).sample
    b = model(x, 10, class_labels=torch.tensor([0, 3])).sample
    torch.testing.assert_close(a[0], b[0])
    assert not torch.allclose(a[1], b[1])
    with pytest.raises(ValueError, match="class_labels are required"):
        model(x, 10)


@torch.no_grad()
def test_class_labels_without_class_embedding_are_rejected():
    with pytest.raises(ValueError, match="no class embedding"):
        _model(**PLAIN)(torch.randn(1, 3, 16, 16), 1, class_labels=torch.tensor([0]))


@torch.no_grad()
def test_identity_class_embedding_takes_embeddings():
    model = _model(**PLAIN, class_embed_type="identity", time_embedding_dim=24)
    assert model.time_embedding.linear_2.out_features == 24
    out = model(torch.randn(2, 3, 16, 16), 5, class_labels=torch.randn(2, 24)).sample
    assert out.shape == (2, 3, 16, 16)


@torch.no_grad()
def test_center_input_sample_maps_unit_range():
    centred = _model(**PLAIN, center_input_sample=True)
    plain = _model(**PLAIN)
    x = torch.rand(1, 3, 16, 16)
    torch.testing.assert_close(centred(x, 3).sample, plain(2 * x - 1, 3).sample)


def test_learned_time_embedding_is_a_table():
    model = _model(**PLAIN, time_embedding_type="learned", num_train_timesteps=50)
    assert isinstance(model.time_proj, torch.nn.Embedding)
    assert model.time_proj.weight.shape == (50, 16)


def test_mid_block_options():
    assert _model(**PLAIN, mid_block_type=None).mid_block is None
    assert len(_model(**PLAIN, add_attention=False).mid_block.attentions) == 0
    shifted = _model(**PLAIN, resnet_time_scale_shift="scale_shift")
    assert shifted.mid_block.attentions[0].group_norm is None
    grouped = _model(**PLAIN, resnet_time_scale_shift="scale_shift", attn_norm_num_groups=4)
    assert grouped.mid_block.attentions[0].group_norm.num_groups == 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "config",
    [RESNET_SAMPLING, SKIP, dict(PLAIN, class_embed_type="timestep")],
    ids=["resnet", "skip", "timestep-class"],
)
@torch.no_grad()
def test_half_precision_forward(config, dtype):
    model = _model(**config).to(dtype)
    labels = _labels(config)
    if config.get("class_embed_type") == "timestep":
        labels = torch.tensor([2, 9])
    out = model(torch.randn(2, 3, 8, 8, dtype=dtype), _timesteps(config), class_labels=labels).sample
    assert out.dtype == dtype
    assert torch.isfinite(out).all()


def test_builds_on_meta_without_buffers():
    with torch.device("meta"):
        model = UNet2DModel(**SKIP)
    assert all(p.is_meta for p in model.parameters())
    assert list(model.buffers()) == []


@pytest.mark.parametrize("config", [PLAIN, SKIP, RESNET_SAMPLING], ids=["plain", "skip", "resnet"])
@torch.no_grad()
def test_save_and_load_round_trip(tmp_path, config):
    model = _model(**config)
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["_class_name"] == "UNet2DModel"
    assert saved["block_out_channels"] == list(config["block_out_channels"])

    loaded = UNet2DModel.from_pretrained(tmp_path)
    assert loaded.config.model_dump() == model.config.model_dump()
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for key, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(
        loaded(x, _timesteps(config), class_labels=_labels(config)).sample,
        model(x, _timesteps(config), class_labels=_labels(config)).sample,
        rtol=0,
        atol=0,
    )


def test_from_pretrained_in_bfloat16(tmp_path):
    _model(**PLAIN).save_pretrained(tmp_path)
    loaded = UNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    with torch.no_grad():
        assert loaded(torch.randn(1, 3, 16, 16, dtype=torch.bfloat16), 4).sample.dtype == torch.bfloat16


def test_legacy_attention_key_renames_only_attention_projections():
    assert legacy_attention_key("mid_block.attentions.0.query.weight") == "mid_block.attentions.0.to_q.weight"
    assert legacy_attention_key("up_blocks.1.attentions.2.proj_attn.bias") == "up_blocks.1.attentions.2.to_out.0.bias"
    assert legacy_attention_key("down_blocks.0.attentions.1.value.bias") == "down_blocks.0.attentions.1.to_v.bias"
    for unchanged in (
        "mid_block.attentions.0.group_norm.weight",
        "down_blocks.0.resnets.0.conv1.weight",
        "mid_block.attentions.0.to_k.weight",
        "key.weight",
    ):
        assert legacy_attention_key(unchanged) == unchanged


def _to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    renamed = {}
    for key, tensor in state.items():
        for new, legacy in old.items():
            key = key.replace(f".{new}.", f".{legacy}.")
        renamed[key] = tensor.contiguous()
    return renamed


@torch.no_grad()
def test_loads_checkpoint_with_legacy_attention_names(tmp_path):
    model = _model(**SKIP)
    model.save_config(tmp_path)
    legacy = _to_legacy(model.state_dict())
    assert any(".proj_attn." in key for key in legacy) and not any(".to_q." in key for key in legacy)
    save_file(legacy, str(tmp_path / "diffusion_pytorch_model.safetensors"))

    loaded = UNet2DModel.from_pretrained(tmp_path)
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(loaded(x, torch.tensor([1.5])).sample, model(x, torch.tensor([1.5])).sample)


def test_checkpoint_for_another_config_is_refused(tmp_path):
    _model(**PLAIN).save_pretrained(tmp_path)
    with pytest.raises(CheckpointError):
        UNet2DModel.from_pretrained(tmp_path, block_out_channels=(16, 48), norm_num_groups=16)


class _CountingBackend(AttentionBackend):
    name = "counting"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, query, key, value, attn_mask=None, scale=None):
        self.calls += 1
        weights = torch.softmax(query @ key.transpose(-1, -2) * scale, dim=-1)
        return weights @ value


def _attention_layers(model):
    return [m for m in model.modules() if isinstance(m, SpatialSelfAttention)]


@torch.no_grad()
def test_attention_layers_share_the_default_backend_and_do_not_register_it():
    model = _model(**SKIP)
    layers = _attention_layers(model)
    assert len(layers) == 3  # one per AttnSkipDown layer, one in AttnSkipUp, one in the mid block
    assert all(layer.attention_backend is diffkit.attention.default_backend() for layer in layers)
    assert not any("backend" in name for name, _ in model.named_modules())
    assert not any("backend" in key for key in model.state_dict())


@torch.no_grad()
def test_set_attention_backend_swaps_every_layer():
    model = _model(**RESNET_SAMPLING)
    x, labels = torch.randn(2, 3, 8, 8), torch.tensor([1, 2])
    reference = model(x, 9, class_labels=labels).sample

    backend = _CountingBackend()
    assert model.set_attention_backend(backend) is backend
    layers = _attention_layers(model)
    assert layers and all(layer.attention_backend is backend for layer in layers)

    out = model(x, 9, class_labels=labels).sample
    assert backend.calls == len(layers)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)

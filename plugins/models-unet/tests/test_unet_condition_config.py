"""UNet2DConditionConfig and UNet2DConditionModel's argument checks: diffusers' keys and
defaults, and one clear error per bad config or bad forward argument."""

import inspect

import pytest
import torch

from diffkit.errors import ConfigError
from diffkit_models_unet.unet_2d_condition import UNet2DConditionConfig, UNet2DConditionModel

TINY = dict(
    sample_size=8,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    layers_per_block=1,
    cross_attention_dim=6,
    attention_head_dim=2,
    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
)

#: the UNet config of Stable Diffusion 1.5 (runwayml/stable-diffusion-v1-5, unet/config.json)
SD15_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.6.0",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}

#: the UNet config of SDXL base 1.0 (stabilityai/stable-diffusion-xl-base-1.0, unet/config.json)
SDXL_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "_diffusers_version": "0.19.0.dev0",
    "act_fn": "silu",
    "addition_embed_type": "text_time",
    "addition_embed_type_num_heads": 64,
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "center_input_sample": False,
    "class_embed_type": None,
    "class_embeddings_concat": False,
    "conv_in_kernel": 3,
    "conv_out_kernel": 3,
    "cross_attention_dim": 2048,
    "cross_attention_norm": None,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "downsample_padding": 1,
    "dual_cross_attention": False,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_only_cross_attention": None,
    "mid_block_scale_factor": 1,
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "num_attention_heads": None,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "out_channels": 4,
    "projection_class_embeddings_input_dim": 2816,
    "resnet_out_scale_factor": 1.0,
    "resnet_skip_time_act": False,
    "resnet_time_scale_shift": "default",
    "sample_size": 128,
    "time_cond_proj_dim": None,
    "time_embedding_act_fn": None,
    "time_embedding_dim": None,
    "time_embedding_type": "positional",
    "timestep_post_act": None,
    "transformer_layers_per_block": [1, 2, 10],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "upcast_attention": None,
    "use_linear_projection": True,
}


def _error(**overrides) -> str:
    with pytest.raises(ConfigError) as err:
        UNet2DConditionConfig.from_dict({**TINY, **overrides})
    return str(err.value)


def test_every_diffusers_argument_is_a_field_with_the_same_default():
    diffusers = pytest.importorskip("diffusers")
    params = inspect.signature(diffusers.UNet2DConditionModel.__init__).parameters
    fields = UNet2DConditionConfig.model_fields
    defaults = UNet2DConditionConfig.from_dict({})
    for name, param in params.items():
        if name == "self":
            continue
        assert name in fields, name
        expected = param.default
        if isinstance(expected, list):
            expected = tuple(expected)
        assert getattr(defaults, name) == expected, name


def test_published_configs_validate():
    sd15 = UNet2DConditionConfig.from_dict(SD15_CONFIG)
    assert sd15.heads == (8, 8, 8, 8)
    sdxl_file = {**SDXL_CONFIG, "upcast_attention": False}
    sdxl = UNet2DConditionConfig.from_dict(sdxl_file)
    assert sdxl.heads == (5, 10, 20)
    assert sdxl.up_transformer_layers == (10, 2, 1)
    assert sdxl.to_dict()["attention_head_dim"] == [5, 10, 20]


def test_a_null_upcast_attention_is_kept_for_the_round_trip():
    # SDXL's config.json has "upcast_attention": null, which diffusers reads as False
    cfg = UNet2DConditionConfig.from_dict(SDXL_CONFIG)
    assert cfg.upcast_attention is None
    assert cfg.to_dict()["upcast_attention"] is None


def test_encoder_hid_dim_alone_records_a_text_projection():
    cfg = UNet2DConditionConfig.from_dict({**TINY, "encoder_hid_dim": 10})
    assert cfg.encoder_hid_dim_type == "text_proj"
    model = UNet2DConditionModel(cfg)
    assert model.encoder_hid_proj.in_features == 10


def test_legacy_block_prefix_is_dropped():
    cfg = UNet2DConditionConfig.from_dict({**TINY, "down_block_types": ["CrossAttnDownBlock2D", "UNetResDownBlock2D"]})
    assert cfg.down_block_types == ("CrossAttnDownBlock2D", "DownBlock2D")


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"down_block_types": ("CrossAttnDownBlock2D", "SimpleCrossAttnDownBlock2D")}, ["down_block_types", "allowed"]),
        ({"up_block_types": ("UpBlock2D",)}, ["up_block_types", "same length"]),
        ({"block_out_channels": (8, 16, 32)}, ["block_out_channels", "one width per down block"]),
        ({"attention_head_dim": (2, 2, 2)}, ["attention_head_dim", "one per block"]),
        ({"cross_attention_dim": (6,)}, ["cross_attention_dim", "one per block"]),
        ({"only_cross_attention": (True,)}, ["only_cross_attention"]),
        ({"layers_per_block": (1, 1, 1)}, ["layers_per_block"]),
        ({"num_attention_heads": 2}, ["num_attention_heads", "attention_head_dim"]),
        ({"dual_cross_attention": True}, ["dual_cross_attention", "not implemented"]),
        ({"norm_num_groups": None}, ["norm_num_groups", "K-diffusion"]),
        ({"down_block_types": ("KDownBlock2D", "DownBlock2D"), "block_out_channels": (32, 32)}, ["mix K-diffusion"]),
        (
            {
                "down_block_types": ("KDownBlock2D", "KCrossAttnDownBlock2D"),
                "up_block_types": ("KCrossAttnUpBlock2D", "KUpBlock2D"),
                "mid_block_type": None,
                "block_out_channels": (32, 48),
            },
            ["multiples of 32", "block_out_channels[1]=48"],
        ),
        (
            {
                "down_block_types": ("KDownBlock2D", "KCrossAttnDownBlock2D"),
                "up_block_types": ("KCrossAttnUpBlock2D", "KUpBlock2D"),
                "mid_block_type": None,
                "block_out_channels": (32, 64),
            },
            ["up_block_types[0]='KCrossAttnUpBlock2D' expects a skip connection", "passes none"],
        ),
        ({"norm_num_groups": 3}, ["divisible by norm_num_groups=3"]),
        ({"attention_head_dim": 9}, ["exceeds block_out_channels[0]=8"]),
        ({"conv_in_kernel": 4}, ["conv_in_kernel", "odd"]),
        ({"addition_embed_type": "text_image"}, ["addition_embed_type", "does not implement"]),
        ({"addition_embed_type": "bogus"}, ["addition_embed_type", "unknown"]),
        ({"encoder_hid_dim_type": "image_proj", "encoder_hid_dim": 4}, ["encoder_hid_dim_type", "does not implement"]),
        ({"attention_type": "gated"}, ["attention_type", "does not implement"]),
        ({"addition_embed_type": "text_time"}, ["addition_time_embed_dim", "projection_class_embeddings_input_dim"]),
        ({"addition_embed_type": "image"}, ["encoder_hid_dim"]),
        ({"addition_embed_type": "text", "addition_embed_type_num_heads": 4}, ["not divisible", "num_heads=4"]),
        ({"class_embed_type": "projection"}, ["projection_class_embeddings_input_dim"]),
        ({"class_embed_type": "bogus"}, ["class_embed_type"]),
        ({"transformer_layers_per_block": ((1,), (1,))}, ["reverse_transformer_layers_per_block"]),
        (
            {"class_embeddings_concat": True, "num_class_embeds": 3, "addition_embed_type": "text"},
            ["class_embeddings_concat", "addition_embed_type"],
        ),
        ({"class_embeddings_concat": True}, ["class_embeddings_concat", "needs a class embedding"]),
        ({"time_embedding_type": "fourier", "time_embedding_dim": 7}, ["fourier", "even"]),
        ({"time_embedding_type": "learned"}, ["time_embedding_type"]),
        ({"encoder_hid_dim": 4, "cross_attention_dim": (6, 6)}, ["encoder_hid_dim", "cross_attention_dim"]),
    ],
)
def test_bad_configs_name_the_field(overrides, words):
    message = _error(**overrides)
    for word in words:
        assert word in message, (word, message)


# -- forward arguments -----------------------------------------------------------------
def _model(**overrides) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel({**TINY, **overrides}).eval()


def _args(batch: int = 2) -> dict:
    return dict(sample=torch.randn(batch, 4, 8, 8), timestep=3, encoder_hidden_states=torch.randn(batch, 5, 6))


def test_output_shape_and_tuple_form():
    model = _model(out_channels=3)
    with torch.no_grad():
        out = model(**_args()).sample
        (tup,) = model(**_args(), return_dict=False)
    assert out.shape == tup.shape == (2, 3, 8, 8)


@pytest.mark.parametrize(
    "overrides, extra, words",
    [
        ({"num_class_embeds": 3}, {}, ["class_labels are required"]),
        ({}, {"class_labels": torch.tensor([0, 1])}, ["no class embedding"]),
        ({}, {"timestep_cond": torch.randn(2, 3)}, ["timestep_cond", "time_cond_proj_dim"]),
        (
            dict(addition_embed_type="text_time", addition_time_embed_dim=2, projection_class_embeddings_input_dim=16),
            {"added_cond_kwargs": {"text_embeds": torch.randn(2, 4)}},
            ["added_cond_kwargs", "time_ids"],
        ),
        ({}, {"cross_attention_kwargs": {"gligen": {}}}, ["cross_attention_kwargs", "gligen"]),
        ({}, {"encoder_hidden_states": torch.randn(2, 5, 7)}, ["width 7", "cross_attention_dim is 6"]),
        ({"encoder_hid_dim": 3}, {"encoder_hidden_states": torch.randn(2, 5, 6)}, ["width 6", "encoder_hid_dim is 3"]),
        ({}, {"encoder_hidden_states": None}, ["encoder_hidden_states", "(batch, tokens, width)"]),
        ({}, {"sample": torch.randn(2, 3, 8, 8)}, ["sample", "in_channels=4"]),
        ({}, {"encoder_attention_mask": torch.ones(2, 1, 5)}, ["encoder_attention_mask", "(batch, tokens)"]),
        ({}, {"encoder_attention_mask": torch.ones(2, 4)}, ["4 tokens", "encoder_attention_mask"]),
        (
            {"mid_block_type": None},
            {"down_block_additional_residuals": [torch.zeros(1)] * 2, "mid_block_additional_residual": torch.zeros(1)},
            ["down_block_additional_residuals", "skip connections"],
        ),
    ],
)
def test_bad_forward_arguments_say_what_to_pass(overrides, extra, words):
    model = _model(**overrides)
    with pytest.raises(ValueError) as err, torch.no_grad():
        model(**{**_args(), **extra})
    for word in words:
        assert word in str(err.value), (word, str(err.value))


def test_lora_scale_is_accepted_and_changes_nothing():
    model = _model()
    args = _args()
    with torch.no_grad():
        plain = model(**args).sample
        scaled = model(**args, cross_attention_kwargs={"scale": 0.3}).sample
    assert torch.equal(plain, scaled)


def test_caller_residual_lists_are_left_untouched():
    model = _model()
    features = [torch.zeros(2, 8, 8, 8), torch.zeros(2, 16, 4, 4)]
    before = list(features)
    with torch.no_grad():
        model(**_args(), down_intrablock_additional_residuals=features)
    assert features == before

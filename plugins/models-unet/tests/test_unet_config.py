"""UNet2DConfig: diffusers' defaults, typed fields and cross-field checks with useful messages."""

import pytest

from diffkit.errors import ConfigError
from diffkit_models_unet.unet_2d import UNet2DConfig

TINY = dict(
    block_out_channels=(16, 32),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=8,
)


def test_defaults_are_diffusers_defaults():
    cfg = UNet2DConfig.from_dict({})
    assert cfg.sample_size is None
    assert (cfg.in_channels, cfg.out_channels) == (3, 3)
    assert cfg.center_input_sample is False
    assert cfg.time_embedding_type == "positional"
    assert cfg.time_embedding_dim is None
    assert (cfg.freq_shift, cfg.flip_sin_to_cos) == (0, True)
    assert cfg.down_block_types == ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    assert cfg.mid_block_type == "UNetMidBlock2D"
    assert cfg.up_block_types == ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    assert cfg.block_out_channels == (224, 448, 672, 896)
    assert cfg.layers_per_block == 2
    assert cfg.mid_block_scale_factor == 1
    assert cfg.downsample_padding == 1
    assert (cfg.downsample_type, cfg.upsample_type) == ("conv", "conv")
    assert cfg.dropout == 0.0
    assert cfg.act_fn == "silu"
    assert cfg.attention_head_dim == 8
    assert cfg.norm_num_groups == 32
    assert cfg.attn_norm_num_groups is None
    assert cfg.norm_eps == 1e-5
    assert cfg.resnet_time_scale_shift == "default"
    assert cfg.add_attention is True
    assert cfg.class_embed_type is None
    assert cfg.num_class_embeds is None
    assert cfg.num_train_timesteps is None


def test_json_lists_become_tuples_and_dump_back_as_lists():
    cfg = UNet2DConfig.from_dict({**TINY, "block_out_channels": [16, 32], "sample_size": [16, 8]})
    assert cfg.block_out_channels == (16, 32)
    assert cfg.sample_size == (16, 8)
    dumped = cfg.to_dict()
    assert dumped["block_out_channels"] == [16, 32]
    assert dumped["down_block_types"] == ["DownBlock2D", "AttnDownBlock2D"]


def test_unknown_block_type_lists_allowed_values():
    with pytest.raises(ConfigError) as err:
        UNet2DConfig.from_dict({**TINY, "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D")})
    message = str(err.value)
    assert "down_block_types" in message
    assert "CrossAttnDownBlock2D" in message
    assert "AttnSkipDownBlock2D" in message  # the allowed values are listed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("time_embedding_type", "rotary"),
        ("resnet_time_scale_shift", "spatial"),
        ("class_embed_type", "projection"),
        ("downsample_type", "fir"),
        ("act_fn", "tanh"),
        ("mid_block_type", "UNetMidBlock2DCrossAttn"),
        ("norm_num_groups", 0),
        ("block_out_channels", (16, -32)),
    ],
)
def test_bad_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        UNet2DConfig.from_dict({**TINY, field: value})


def test_length_mismatch_names_both_fields():
    with pytest.raises(ConfigError) as err:
        UNet2DConfig.from_dict({**TINY, "block_out_channels": (16, 32, 64)})
    assert "down_block_types" in str(err.value) and "block_out_channels" in str(err.value)

    with pytest.raises(ConfigError) as err:
        UNet2DConfig.from_dict({**TINY, "up_block_types": ("UpBlock2D",)})
    assert "up_block_types" in str(err.value) and "down_block_types" in str(err.value)


def test_learned_time_embedding_needs_num_train_timesteps():
    with pytest.raises(ConfigError, match="num_train_timesteps"):
        UNet2DConfig.from_dict({**TINY, "time_embedding_type": "learned"})
    assert UNet2DConfig.from_dict({**TINY, "time_embedding_type": "learned", "num_train_timesteps": 10})


def test_group_counts_must_divide_widths():
    with pytest.raises(ConfigError, match=r"block_out_channels\[0\]=12 is not divisible by norm_num_groups=8"):
        UNet2DConfig.from_dict({**TINY, "block_out_channels": (12, 32)})
    with pytest.raises(ConfigError, match="attn_norm_num_groups=5"):
        UNet2DConfig.from_dict({**TINY, "attn_norm_num_groups": 5})


def test_norm_num_groups_none_only_for_skip_blocks():
    with pytest.raises(ConfigError, match="norm_num_groups=None"):
        UNet2DConfig.from_dict({**TINY, "norm_num_groups": None})
    skip = UNet2DConfig.from_dict(
        {
            "block_out_channels": (32, 64),
            "down_block_types": ("SkipDownBlock2D", "AttnSkipDownBlock2D"),
            "up_block_types": ("AttnSkipUpBlock2D", "SkipUpBlock2D"),
            "norm_num_groups": None,
        }
    )
    assert skip.mid_block_groups == 16  # a quarter of 64, as diffusers' mid block does


def test_skip_blocks_need_three_image_channels():
    skip = {
        "block_out_channels": (32, 64),
        "down_block_types": ("SkipDownBlock2D", "SkipDownBlock2D"),
        "up_block_types": ("SkipUpBlock2D", "SkipUpBlock2D"),
    }
    with pytest.raises(ConfigError, match="in_channels=1"):
        UNet2DConfig.from_dict({**skip, "in_channels": 1})
    with pytest.raises(ConfigError, match="out_channels=4"):
        UNet2DConfig.from_dict({**skip, "out_channels": 4})


def test_legacy_block_prefix_and_activation_case_are_normalised():
    cfg = UNet2DConfig.from_dict(
        {**TINY, "down_block_types": ["UNetResDownBlock2D", "UNetResAttnDownBlock2D"], "act_fn": "SiLU"}
    )
    assert cfg.down_block_types == ("DownBlock2D", "AttnDownBlock2D")
    assert cfg.act_fn == "silu"


def test_derived_widths_and_groups():
    cfg = UNet2DConfig.from_dict(TINY)
    assert cfg.time_embed_dim == 64
    assert UNet2DConfig.from_dict({**TINY, "time_embedding_dim": 40}).time_embed_dim == 40
    assert cfg.mid_attention_groups == 8
    assert UNet2DConfig.from_dict({**TINY, "resnet_time_scale_shift": "scale_shift"}).mid_attention_groups is None
    both = UNet2DConfig.from_dict({**TINY, "resnet_time_scale_shift": "scale_shift", "attn_norm_num_groups": 4})
    assert both.mid_attention_groups == 4


def test_unknown_keys_are_kept():
    cfg = UNet2DConfig.from_dict({**TINY, "some_future_key": 3})
    assert cfg.extras == {"some_future_key": 3}
    assert cfg.to_dict()["some_future_key"] == 3

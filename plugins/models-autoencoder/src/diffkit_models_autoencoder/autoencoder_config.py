"""``AutoencoderConfig``: the fields and checks that every encoder/decoder autoencoder shares.

VQModel and AutoencoderKL describe their encoder and decoder with the same diffusers keys;
each subclass adds its own keys and sets the defaults of the diffusers class it mirrors.
"""

from __future__ import annotations

from typing import Any

from pydantic import PositiveFloat, PositiveInt, field_validator, model_validator

from diffkit.config import Config
from diffkit_models_unet.activations import ActivationName

from .blocks import DecoderBlockType, EncoderBlockType


class AutoencoderConfig(Config):
    """Encoder/decoder layout keys common to the autoencoders of this package."""

    in_channels: PositiveInt = 3
    out_channels: PositiveInt = 3
    down_block_types: tuple[EncoderBlockType, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[DecoderBlockType, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[PositiveInt, ...] = (64,)
    layers_per_block: PositiveInt = 1
    act_fn: ActivationName = "silu"
    latent_channels: PositiveInt = 3
    sample_size: PositiveInt = 32
    norm_num_groups: PositiveInt = 32
    scaling_factor: PositiveFloat = 0.18215
    mid_block_add_attention: bool = True
    force_upcast: bool = False

    @field_validator("act_fn", mode="before")
    @classmethod
    def _lowercase_activation(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_levels(self) -> AutoencoderConfig:
        problems = []
        n = len(self.block_out_channels)
        if n == 0:
            problems.append("block_out_channels must list at least one width")
        for key in ("down_block_types", "up_block_types"):
            if len(getattr(self, key)) != n:
                problems.append(f"{key} has {len(getattr(self, key))} entries but block_out_channels has {n}")
        for i, width in enumerate(self.block_out_channels):
            if width % self.norm_num_groups:
                problems.append(
                    f"block_out_channels[{i}]={width} is not divisible by norm_num_groups={self.norm_num_groups}"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def downscale_factor(self) -> int:
        """How many image pixels one latent pixel spans per side: ``2 ** (levels - 1)``."""
        return 2 ** (len(self.block_out_channels) - 1)

"""``UNet1DModel``: the 1D UNet of Dance Diffusion (audio) and of Diffuser's planners (RL).

Same config keys, defaults, state-dict keys and numbers as diffusers' ``UNet1DModel``, so its
checkpoints (``harmonai/maestro-150k``, ``bglick13/hopper-medium-v2-value-function-hor32``,
...) load unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import NonNegativeInt, PositiveInt, field_validator, model_validator
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput

from .activations import ActivationName
from .blocks_1d import (
    AttnDownBlock1D,
    AttnUpBlock1D,
    DownBlock1D,
    DownBlock1DNoSkip,
    UNetMidBlock1D,
    UpBlock1D,
    UpBlock1DNoSkip,
)
from .embeddings import GaussianFourierProjection, SinusoidalProjection, TimestepEmbedding
from .temporal_1d import (
    DownResnetBlock1D,
    MidResTemporalBlock1D,
    OutConv1DBlock,
    OutValueFunctionBlock,
    UpResnetBlock1D,
    ValueFunctionMidBlock1D,
)

Down1DType = Literal["DownResnetBlock1D", "DownBlock1D", "AttnDownBlock1D", "DownBlock1DNoSkip"]
Up1DType = Literal["UpResnetBlock1D", "UpBlock1D", "AttnUpBlock1D", "UpBlock1DNoSkip"]
Mid1DType = Literal["MidResTemporalBlock1D", "ValueFunctionMidBlock1D", "UNetMidBlock1D"]
Out1DType = Literal["OutConv1DBlock", "ValueFunction"]


@dataclasses.dataclass
class UNet1DOutput(BaseOutput):
    """``sample``: the model output, ``(batch, out_channels, length)`` (``(batch, 1)`` for a value head)."""

    sample: torch.Tensor


class UNet1DConfig(Config):
    """Configuration of :class:`UNet1DModel`: diffusers' keys and defaults."""

    owner_name: ClassVar[str] = "UNet1DModel"

    sample_size: PositiveInt = 65536
    sample_rate: PositiveInt | None = None
    in_channels: PositiveInt = 2
    out_channels: PositiveInt = 2
    extra_in_channels: NonNegativeInt = 0
    time_embedding_type: Literal["fourier", "positional"] = "fourier"
    time_embedding_dim: PositiveInt | None = None
    flip_sin_to_cos: bool = True
    use_timestep_embedding: bool = False
    freq_shift: float = 0.0
    down_block_types: tuple[Down1DType, ...] = ("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D")
    up_block_types: tuple[Up1DType, ...] = ("AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip")
    mid_block_type: Mid1DType = "UNetMidBlock1D"
    out_block_type: Out1DType | None = None
    block_out_channels: tuple[PositiveInt, ...] = (32, 32, 64)
    act_fn: ActivationName | None = None
    norm_num_groups: PositiveInt | None = 8
    layers_per_block: NonNegativeInt = 1
    downsample_each_block: bool = False

    @field_validator("act_fn", mode="before")
    @classmethod
    def _lowercase_activation(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> UNet1DConfig:
        problems = []
        n = len(self.block_out_channels)
        if n == 0:
            problems.append("block_out_channels must list at least one width")
        if len(self.down_block_types) > n:
            problems.append(
                f"down_block_types has {len(self.down_block_types)} entries but block_out_channels only {n}"
            )
        if len(self.up_block_types) > len(self.down_block_types):
            problems.append(
                f"up_block_types has {len(self.up_block_types)} entries but down_block_types only "
                f"{len(self.down_block_types)}: every up block takes the skip of one down block"
            )
        if (
            self.time_embedding_type == "fourier"
            and self.time_embedding_dim is not None
            and self.time_embedding_dim % 2
        ):
            problems.append(f"time_embedding_dim={self.time_embedding_dim} must be even for Fourier features")
        if self.act_fn is None:
            if self.use_timestep_embedding:
                problems.append("use_timestep_embedding=True needs act_fn (the activation of the embedding MLP)")
            if self.out_block_type is not None:
                problems.append(f"out_block_type={self.out_block_type!r} needs act_fn")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -----------------------------------------------------------------
    @property
    def projection_dim(self) -> int:
        """Width of the projected timestep (the Fourier or sinusoidal features)."""
        if self.time_embedding_type == "fourier":
            return self.time_embedding_dim or 2 * self.block_out_channels[0]
        return self.block_out_channels[0]


class UNet1DModel(Model):
    """A 1D UNet that maps a noisy ``(batch, in_channels, length)`` signal and a timestep to a
    ``(batch, out_channels, length)`` prediction (or one value per sample with a value head).

    Without ``use_timestep_embedding`` the projected timestep is spread along the length and
    fed to the first block as extra channels (``extra_in_channels``); with it, an MLP embeds
    the timestep and every temporal residual block is conditioned on the result.
    """

    config_class = UNet1DConfig
    config: UNet1DConfig

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        widths = cfg.block_out_channels
        embed = widths[0]

        if cfg.time_embedding_type == "fourier":
            self.time_proj: nn.Module = GaussianFourierProjection(
                cfg.projection_dim // 2, log=False, flip_sin_to_cos=cfg.flip_sin_to_cos
            )
        else:
            self.time_proj = SinusoidalProjection(embed, cfg.flip_sin_to_cos, cfg.freq_shift)
        if cfg.use_timestep_embedding:
            assert cfg.act_fn is not None  # checked by the config
            self.time_mlp = TimestepEmbedding(cfg.projection_dim, 4 * embed, act_fn=cfg.act_fn, out_dim=embed)

        self.down_blocks = nn.ModuleList()
        previous = cfg.in_channels
        for i, block_type in enumerate(cfg.down_block_types):
            in_channels = previous + (cfg.extra_in_channels if i == 0 else 0)
            add_downsample = i != len(widths) - 1 or cfg.downsample_each_block
            self.down_blocks.append(
                _down_block(block_type, in_channels, widths[i], embed, cfg.layers_per_block, add_downsample)
            )
            previous = widths[i]

        self.mid_block = _mid_block(cfg, widths[-1], embed)

        reversed_widths = widths[::-1]
        final_channels = cfg.out_channels if cfg.out_block_type is None else embed
        self.up_blocks = nn.ModuleList()
        previous = reversed_widths[0]
        count = len(cfg.up_block_types)
        for i, block_type in enumerate(cfg.up_block_types):
            out_channels = reversed_widths[i + 1] if i < count - 1 else final_channels
            add_upsample = i != len(widths) - 1
            self.up_blocks.append(
                _up_block(block_type, previous, out_channels, embed, cfg.layers_per_block, add_upsample)
            )
            previous = out_channels

        self.out_block = _out_block(cfg, embed)

    @property
    def sample_size(self) -> int:
        return self.config.sample_size

    def _embed(self, timestep: torch.Tensor | float | int, sample: torch.Tensor) -> torch.Tensor:
        """The time conditioning: ``(batch, dim)`` through the MLP, else ``(batch, dim, length)`` features."""
        if not torch.is_tensor(timestep):
            timesteps = torch.tensor([timestep], dtype=torch.long, device=sample.device)
        else:
            timesteps = timestep.reshape(1).to(sample.device) if timestep.ndim == 0 else timestep.to(sample.device)
        projected = self.time_proj(timesteps)
        if self.config.use_timestep_embedding:
            return self.time_mlp(projected.to(sample.dtype))
        features = projected.to(sample.dtype)[:, :, None]
        return features.expand(sample.shape[0], features.shape[1], sample.shape[2])

    def forward(
        self, sample: torch.Tensor, timestep: torch.Tensor | float | int, return_dict: bool = True
    ) -> UNet1DOutput | tuple[torch.Tensor]:
        """Denoise ``sample`` at ``timestep`` (one value or one per batch entry)."""
        temb = self._embed(timestep, sample)
        hidden = sample
        residuals: list[torch.Tensor] = []
        for down in self.down_blocks:
            hidden, residual = down(hidden, temb)
            residuals.append(residual)

        hidden = self.mid_block(hidden, temb)

        for up in self.up_blocks:
            hidden = up(hidden, residuals.pop(), temb)

        if self.out_block is not None:
            hidden = self.out_block(hidden, temb)

        if not return_dict:
            return (hidden,)
        return UNet1DOutput(sample=hidden)


def _down_block(
    block_type: str, in_channels: int, out_channels: int, embed: int, num_layers: int, add_downsample: bool
) -> nn.Module:
    if block_type == "DownResnetBlock1D":
        return DownResnetBlock1D(in_channels, out_channels, embed, num_layers=num_layers, add_downsample=add_downsample)
    dance = {"DownBlock1D": DownBlock1D, "AttnDownBlock1D": AttnDownBlock1D, "DownBlock1DNoSkip": DownBlock1DNoSkip}
    return dance[block_type](out_channels, in_channels)


def _up_block(
    block_type: str, in_channels: int, out_channels: int, embed: int, num_layers: int, add_upsample: bool
) -> nn.Module:
    if block_type == "UpResnetBlock1D":
        return UpResnetBlock1D(in_channels, out_channels, embed, num_layers=num_layers, add_upsample=add_upsample)
    dance = {"UpBlock1D": UpBlock1D, "AttnUpBlock1D": AttnUpBlock1D, "UpBlock1DNoSkip": UpBlock1DNoSkip}
    return dance[block_type](in_channels, out_channels)


def _mid_block(cfg: UNet1DConfig, channels: int, embed: int) -> nn.Module:
    if cfg.mid_block_type == "MidResTemporalBlock1D":
        return MidResTemporalBlock1D(
            channels, channels, embed, num_layers=cfg.layers_per_block, add_downsample=cfg.downsample_each_block
        )
    if cfg.mid_block_type == "ValueFunctionMidBlock1D":
        return ValueFunctionMidBlock1D(channels, channels, embed)
    return UNetMidBlock1D(channels, channels, channels)


def _out_block(cfg: UNet1DConfig, embed: int) -> nn.Module | None:
    if cfg.out_block_type is None:
        return None
    assert cfg.act_fn is not None  # checked by the config
    if cfg.out_block_type == "OutConv1DBlock":
        groups = cfg.norm_num_groups if cfg.norm_num_groups is not None else min(embed // 4, 32)
        return OutConv1DBlock(groups, cfg.out_channels, embed, cfg.act_fn)
    return OutValueFunctionBlock(cfg.block_out_channels[-1] // 4, embed, cfg.act_fn)

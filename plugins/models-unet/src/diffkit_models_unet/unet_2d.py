"""``UNet2DModel``: the 2D UNet denoiser of DDPM/DDIM, NCSN++ and consistency models.

Same config keys, defaults, state-dict keys and numbers as diffusers' ``UNet2DModel``, so
its checkpoints (``google/ddpm-cifar10-32``, ``google/ddpm-ema-church-256``,
``openai/diffusers-cd_imagenet64_l2``, ...) load unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput

from .activations import ActivationName
from .blocks import (
    SKIP_BLOCKS,
    SKIP_IMAGE_CHANNELS,
    BlockOptions,
    DownBlockType,
    UNetMidBlock2D,
    UpBlockType,
    build_down_block,
    build_up_block,
    skip_groups,
)
from .embeddings import GaussianFourierProjection, SinusoidalProjection, TimestepEmbedding

#: standard deviation of the NCSN++ Fourier frequencies
FOURIER_SCALE = 16.0
#: diffusers accepts block names with this prefix and drops it
_LEGACY_BLOCK_PREFIX = "UNetRes"

#: attention parameter names of old diffusers checkpoints (the removed ``AttentionBlock``) -> current names
_LEGACY_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LEGACY_ATTENTION_KEY = re.compile(
    r"^(?P<path>.*\battentions\.\d+)\.(?P<name>query|key|value|proj_attn)\.(?P<kind>weight|bias)$"
)


@dataclasses.dataclass
class UNet2DOutput(BaseOutput):
    """``sample``: the model output, shaped like the input sample."""

    sample: torch.Tensor


class UNet2DConfig(Config):
    """Configuration of :class:`UNet2DModel`: diffusers' keys and defaults."""

    owner_name: ClassVar[str] = "UNet2DModel"

    sample_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    in_channels: PositiveInt = 3
    out_channels: PositiveInt = 3
    center_input_sample: bool = False
    time_embedding_type: Literal["positional", "fourier", "learned"] = "positional"
    time_embedding_dim: PositiveInt | None = None
    freq_shift: int = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[DownBlockType, ...] = (
        "DownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
        "AttnDownBlock2D",
    )
    mid_block_type: Literal["UNetMidBlock2D"] | None = "UNetMidBlock2D"
    up_block_types: tuple[UpBlockType, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[PositiveInt, ...] = (224, 448, 672, 896)
    layers_per_block: NonNegativeInt = 2
    mid_block_scale_factor: float = 1.0
    downsample_padding: NonNegativeInt = 1
    downsample_type: Literal["conv", "resnet"] = "conv"
    upsample_type: Literal["conv", "resnet"] = "conv"
    dropout: float = Field(default=0.0, ge=0.0, le=1.0)
    act_fn: ActivationName = "silu"
    attention_head_dim: PositiveInt | None = 8
    norm_num_groups: PositiveInt | None = 32
    attn_norm_num_groups: PositiveInt | None = None
    norm_eps: PositiveFloat = 1e-5
    resnet_time_scale_shift: Literal["default", "scale_shift"] = "default"
    add_attention: bool = True
    class_embed_type: Literal["timestep", "identity"] | None = None
    num_class_embeds: PositiveInt | None = None
    num_train_timesteps: PositiveInt | None = None

    @field_validator("down_block_types", "up_block_types", mode="before")
    @classmethod
    def _drop_legacy_prefix(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(v.removeprefix(_LEGACY_BLOCK_PREFIX) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("act_fn", mode="before")
    @classmethod
    def _lowercase_activation(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check_consistency(self) -> UNet2DConfig:
        problems = config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -----------------------------------------------------------------
    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding that conditions every resnet."""
        return self.time_embedding_dim or 4 * self.block_out_channels[0]

    @property
    def mid_block_groups(self) -> int:
        """GroupNorm groups of the mid block's resnets (and of the output norm)."""
        if self.norm_num_groups is not None:
            return self.norm_num_groups
        return skip_groups(self.block_out_channels[-1])

    @property
    def mid_attention_groups(self) -> int | None:
        """GroupNorm groups before the mid attention; ``None``: that attention has no norm."""
        if self.attn_norm_num_groups is not None:
            return self.attn_norm_num_groups
        return self.mid_block_groups if self.resnet_time_scale_shift == "default" else None


def config_problems(cfg: UNet2DConfig) -> list[str]:
    """Cross-field inconsistencies of ``cfg``, each naming the fields involved."""
    problems = []
    n = len(cfg.block_out_channels)
    if n == 0:
        problems.append("block_out_channels must list at least one width")
    if len(cfg.down_block_types) != n:
        problems.append(
            f"down_block_types has {len(cfg.down_block_types)} entries but block_out_channels has {n}; "
            "give one down block per width"
        )
    if len(cfg.up_block_types) != len(cfg.down_block_types):
        problems.append(
            f"up_block_types has {len(cfg.up_block_types)} entries but down_block_types has "
            f"{len(cfg.down_block_types)}; they must have the same length"
        )
    if cfg.time_embedding_type == "learned" and cfg.num_train_timesteps is None:
        problems.append("time_embedding_type='learned' needs num_train_timesteps (the size of the embedding table)")
    if problems:
        return problems

    plain_down = {i for i, name in enumerate(cfg.down_block_types) if name not in SKIP_BLOCKS}
    plain_up = {n - 1 - i for i, name in enumerate(cfg.up_block_types) if name not in SKIP_BLOCKS}
    non_skip_levels = plain_down | plain_up
    if cfg.norm_num_groups is None:
        if non_skip_levels:
            problems.append(
                "norm_num_groups=None is only allowed when every entry of down_block_types and up_block_types "
                "is a Skip block (they size their norms themselves)"
            )
    else:
        levels = sorted(non_skip_levels | {0} | ({n - 1} if cfg.mid_block_type is not None else set()))
        for i in levels:
            if cfg.block_out_channels[i] % cfg.norm_num_groups:
                problems.append(
                    f"block_out_channels[{i}]={cfg.block_out_channels[i]} is not divisible by "
                    f"norm_num_groups={cfg.norm_num_groups}"
                )
    if cfg.mid_block_type is not None and cfg.add_attention and cfg.attn_norm_num_groups is not None:
        if cfg.block_out_channels[-1] % cfg.attn_norm_num_groups:
            problems.append(
                f"block_out_channels[-1]={cfg.block_out_channels[-1]} is not divisible by "
                f"attn_norm_num_groups={cfg.attn_norm_num_groups}"
            )
    last = n - 1
    if cfg.in_channels != SKIP_IMAGE_CHANNELS and any(
        name in SKIP_BLOCKS for i, name in enumerate(cfg.down_block_types) if i != last
    ):
        problems.append(
            f"in_channels={cfg.in_channels}: SkipDownBlock2D/AttnSkipDownBlock2D in down_block_types carry a "
            "3-channel image path, so in_channels must be 3"
        )
    if cfg.out_channels != SKIP_IMAGE_CHANNELS and any(
        name in SKIP_BLOCKS for i, name in enumerate(cfg.up_block_types) if i != last
    ):
        problems.append(
            f"out_channels={cfg.out_channels}: SkipUpBlock2D/AttnSkipUpBlock2D in up_block_types add a "
            "3-channel image path to the output, so out_channels must be 3"
        )
    return problems


def broadcast_timesteps(
    timestep: torch.Tensor | float | int, batch: int, device: torch.device, *, keep_fractions: bool = False
) -> torch.Tensor:
    """``timestep`` as a 1-D tensor of ``batch`` entries.

    A Python number becomes a long tensor, as in diffusers' ``UNet2DModel`` (fractions are
    truncated: pass noise levels as a tensor); with ``keep_fractions`` a Python float becomes a
    float64 tensor instead (float32 on MPS), as in ``UNet2DConditionModel``. Tensors are moved
    to ``device``.
    """
    if not torch.is_tensor(timestep):
        dtype = torch.long
        if keep_fractions and isinstance(timestep, float):
            dtype = torch.float32 if torch.device(device).type == "mps" else torch.float64
        timesteps = torch.tensor([timestep], dtype=dtype, device=device)
    else:
        timesteps = timestep.reshape(1).to(device) if timestep.ndim == 0 else timestep.to(device)
    return timesteps * torch.ones(batch, dtype=timesteps.dtype, device=timesteps.device)


class UNet2DModel(Model):
    """A UNet that maps a noisy ``(batch, in_channels, h, w)`` sample and a timestep (or noise
    level) to a ``(batch, out_channels, h, w)`` prediction, optionally class-conditioned.

    Height and width must be divisible by ``2 ** (len(block_out_channels) - 1)``.
    """

    config_class = UNet2DConfig
    config: UNet2DConfig

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        widths = cfg.block_out_channels
        temb = cfg.time_embed_dim

        self.conv_in = nn.Conv2d(cfg.in_channels, widths[0], kernel_size=3, padding=1)
        self.time_proj, proj_dim = _time_projection(cfg)
        self.time_embedding = TimestepEmbedding(proj_dim, temb)
        self.class_embedding = _class_embedding(cfg, proj_dim)

        opts = BlockOptions(
            temb_channels=temb,
            eps=cfg.norm_eps,
            act_fn=cfg.act_fn,
            dropout=cfg.dropout,
            time_embedding_norm=cfg.resnet_time_scale_shift,
            groups=cfg.norm_num_groups,
        )
        last = len(widths) - 1
        self.down_blocks = nn.ModuleList(
            build_down_block(
                block_type,
                widths[max(i - 1, 0)],
                widths[i],
                cfg.layers_per_block,
                opts,
                add_downsample=i != last,
                downsample_type=cfg.downsample_type,
                downsample_padding=cfg.downsample_padding,
                head_dim=cfg.attention_head_dim,
            )
            for i, block_type in enumerate(cfg.down_block_types)
        )
        self.mid_block = (
            UNetMidBlock2D(
                widths[-1],
                dataclasses.replace(opts, groups=cfg.mid_block_groups),
                head_dim=cfg.attention_head_dim,
                attn_groups=cfg.mid_attention_groups,
                add_attention=cfg.add_attention,
                output_scale_factor=cfg.mid_block_scale_factor,
            )
            if cfg.mid_block_type is not None
            else None
        )
        reversed_widths = widths[::-1]
        self.up_blocks = nn.ModuleList(
            build_up_block(
                block_type,
                reversed_widths[min(i + 1, last)],
                reversed_widths[max(i - 1, 0)],
                reversed_widths[i],
                cfg.layers_per_block + 1,
                opts,
                add_upsample=i != last,
                upsample_type=cfg.upsample_type,
                head_dim=cfg.attention_head_dim,
            )
            for i, block_type in enumerate(cfg.up_block_types)
        )

        out_groups = cfg.norm_num_groups if cfg.norm_num_groups is not None else skip_groups(widths[0])
        self.conv_norm_out = nn.GroupNorm(out_groups, widths[0], eps=cfg.norm_eps)
        self.conv_act = nn.SiLU()
        self.conv_out = nn.Conv2d(widths[0], cfg.out_channels, kernel_size=3, padding=1)

    @property
    def sample_size(self) -> int | tuple[int, int] | None:
        return self.config.sample_size

    @classmethod
    def convert_state_dict(cls, state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
        """Rename the attention parameters of old diffusers checkpoints (``query``, ``key``,
        ``value``, ``proj_attn``) to ``to_q``, ``to_k``, ``to_v``, ``to_out.0``."""
        return {legacy_attention_key(key): tensor for key, tensor in state.items()}

    def _embed(self, timesteps: torch.Tensor, class_labels: torch.Tensor | None) -> torch.Tensor:
        dtype = self.dtype
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=dtype))
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given but this UNet2DModel has no class embedding "
                    "(its config sets neither class_embed_type nor num_class_embeds)"
                )
            return emb
        if class_labels is None:
            raise ValueError("class_labels are required: this UNet2DModel is class-conditioned")
        if self.config.class_embed_type == "timestep":
            class_labels = self.time_proj(class_labels).to(dtype=dtype)
        return emb + self.class_embedding(class_labels).to(dtype=dtype)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        class_labels: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DOutput | tuple[torch.Tensor]:
        """Denoise ``sample`` at ``timestep`` (one value or one per batch entry).

        ``class_labels``: class ids (``num_class_embeds``), values to project like timesteps
        (``class_embed_type='timestep'``) or ready embeddings (``'identity'``).
        """
        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        timesteps = broadcast_timesteps(timestep, sample.shape[0], sample.device)
        emb = self._embed(timesteps, class_labels)

        skip: torch.Tensor | int | None = sample
        hidden = self.conv_in(sample)
        residuals: tuple[torch.Tensor, ...] = (hidden,)
        for down in self.down_blocks:
            hidden, block_residuals, skip = down(hidden, emb, skip)
            residuals += block_residuals

        if self.mid_block is not None:
            hidden = self.mid_block(hidden, emb)

        skip = None
        for up in self.up_blocks:
            taken = len(up.resnets)
            hidden, skip = up(hidden, residuals[-taken:], emb, skip)
            residuals = residuals[:-taken]

        out = self.conv_out(self.conv_act(self.conv_norm_out(hidden)))
        if skip is not None:
            out = out + skip
        if self.config.time_embedding_type == "fourier":
            # divide in the timesteps' precision, return in the model's
            out = (out / timesteps.reshape(-1, *([1] * (out.ndim - 1)))).to(out.dtype)

        if not return_dict:
            return (out,)
        return UNet2DOutput(sample=out)


def legacy_attention_key(key: str) -> str:
    """The current name of an old-layout attention parameter key; other keys unchanged."""
    match = _LEGACY_ATTENTION_KEY.match(key)
    if match is None:
        return key
    return f"{match['path']}.{_LEGACY_ATTENTION_NAMES[match['name']]}.{match['kind']}"


def _time_projection(cfg: UNet2DConfig) -> tuple[nn.Module, int]:
    """The timestep projection for ``time_embedding_type`` and the width it produces."""
    width = cfg.block_out_channels[0]
    if cfg.time_embedding_type == "fourier":
        return GaussianFourierProjection(width, scale=FOURIER_SCALE), 2 * width
    if cfg.time_embedding_type == "learned":
        assert cfg.num_train_timesteps is not None  # checked by the config
        return nn.Embedding(cfg.num_train_timesteps, width), width
    return SinusoidalProjection(width, cfg.flip_sin_to_cos, cfg.freq_shift), width


def _class_embedding(cfg: UNet2DConfig, proj_dim: int) -> nn.Module | None:
    """The class-label embedding: a lookup table, an MLP over projected values, or identity."""
    if cfg.class_embed_type is None and cfg.num_class_embeds is not None:
        return nn.Embedding(cfg.num_class_embeds, cfg.time_embed_dim)
    if cfg.class_embed_type == "timestep":
        return TimestepEmbedding(proj_dim, cfg.time_embed_dim)
    if cfg.class_embed_type == "identity":
        return nn.Identity()
    return None

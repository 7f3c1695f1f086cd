"""``UNet2DConditionModel``: the text-conditioned latent UNet of Stable Diffusion and relatives.

Same config keys, defaults, state-dict keys and numbers as diffusers' class of that name for
the block types Stable Diffusion 1.x/2.x/XL, the x4 upscaler, LCM, inpainting and
InstructPix2Pix checkpoints use (``CrossAttnDownBlock2D``, ``DownBlock2D``,
``UNetMidBlock2DCrossAttn``, ``UNetMidBlock2D``, ``CrossAttnUpBlock2D``, ``UpBlock2D``), and
the K-diffusion blocks of the x2 latent upscaler (``KDownBlock2D``, ``KCrossAttnDownBlock2D``,
``KUpBlock2D``, ``KCrossAttnUpBlock2D``; there ``attention_head_dim`` is the width of a head).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput

from .activations import ActivationName, activation
from .blocks import BlockOptions, DownBlock2D, UNetMidBlock2D, UpBlock2D
from .cross_attn_blocks import (
    Conditioning,
    CrossAttnDownBlock2D,
    CrossAttnOptions,
    CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
)
from .embeddings import (
    GaussianFourierProjection,
    ImageTimeEmbedding,
    SinusoidalProjection,
    TextTimeEmbedding,
    TimestepEmbedding,
)
from .k_blocks import K_BLOCKS, KCrossAttnDownBlock2D, KCrossAttnUpBlock2D, KDownBlock2D, KUpBlock2D
from .k_resnet import K_GROUP_SIZE
from .unet_2d import broadcast_timesteps


CondDownBlockType = Literal["CrossAttnDownBlock2D", "DownBlock2D", "KDownBlock2D", "KCrossAttnDownBlock2D"]
CondUpBlockType = Literal["CrossAttnUpBlock2D", "UpBlock2D", "KUpBlock2D", "KCrossAttnUpBlock2D"]
CondMidBlockType = Literal["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"]

#: the value a masked-out token adds to the attention scores, as in diffusers
MASK_BIAS = -10000.0
#: diffusers accepts block names with this prefix and drops it
_LEGACY_BLOCK_PREFIX = "UNetRes"
#: option values diffusers knows that this implementation does not build, per field
_NOT_IMPLEMENTED = {
    "addition_embed_type": {"text_image", "image_hint"},
    "encoder_hid_dim_type": {"text_image_proj", "image_proj", "ip_image_proj"},
    "attention_type": {"gated", "gated-text-image"},
}

PositiveInts = PositiveInt | tuple[PositiveInt, ...]


@dataclasses.dataclass
class UNet2DConditionOutput(BaseOutput):
    """``sample``: the model output, shaped like the input sample (with ``out_channels``)."""

    sample: torch.Tensor


class UNet2DConditionConfig(Config):
    """Configuration of :class:`UNet2DConditionModel`: diffusers' keys and defaults.

    Per-block options (``attention_head_dim``, ``cross_attention_dim``, ``only_cross_attention``,
    ``layers_per_block``, ``transformer_layers_per_block``) take one value for every block or one
    per down block; the up blocks use them in reverse. As in diffusers, ``attention_head_dim``
    is the number of attention heads of each block (``num_attention_heads`` must stay unset).
    """

    owner_name: ClassVar[str] = "UNet2DConditionModel"

    sample_size: PositiveInt | tuple[PositiveInt, PositiveInt] | None = None
    in_channels: PositiveInt = 4
    out_channels: PositiveInt = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: int = 0
    down_block_types: tuple[CondDownBlockType, ...] = (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    )
    mid_block_type: CondMidBlockType | None = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[CondUpBlockType, ...] = (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    )
    only_cross_attention: bool | tuple[bool, ...] = False
    block_out_channels: tuple[PositiveInt, ...] = (320, 640, 1280, 1280)
    layers_per_block: NonNegativeInt | tuple[NonNegativeInt, ...] = 2
    downsample_padding: NonNegativeInt = 1
    mid_block_scale_factor: float = 1.0
    dropout: float = Field(default=0.0, ge=0.0, le=1.0)
    act_fn: ActivationName = "silu"
    norm_num_groups: PositiveInt | None = 32
    norm_eps: PositiveFloat = 1e-5
    cross_attention_dim: PositiveInts = 1280
    transformer_layers_per_block: PositiveInt | tuple[PositiveInt | tuple[PositiveInt, ...], ...] = 1
    reverse_transformer_layers_per_block: tuple[PositiveInt | tuple[PositiveInt, ...], ...] | None = None
    encoder_hid_dim: PositiveInt | None = None
    encoder_hid_dim_type: str | None = None
    attention_head_dim: PositiveInts = 8
    num_attention_heads: PositiveInts | None = None
    dual_cross_attention: bool = False
    use_linear_projection: bool = False
    class_embed_type: Literal["timestep", "identity", "projection", "simple_projection"] | None = None
    addition_embed_type: str | None = None
    addition_time_embed_dim: PositiveInt | None = None
    num_class_embeds: PositiveInt | None = None
    #: SDXL's config.json stores ``null``, read as ``False``
    upcast_attention: bool | None = False
    resnet_time_scale_shift: Literal["default", "scale_shift"] = "default"
    #: used by diffusers' SimpleCrossAttn/ResnetDownsample blocks only: no effect on these blocks
    resnet_skip_time_act: bool = False
    #: used by diffusers' SimpleCrossAttn/ResnetDownsample blocks only: no effect on these blocks
    resnet_out_scale_factor: float = 1.0
    time_embedding_type: Literal["positional", "fourier"] = "positional"
    time_embedding_dim: PositiveInt | None = None
    time_embedding_act_fn: ActivationName | None = None
    timestep_post_act: ActivationName | None = None
    time_cond_proj_dim: PositiveInt | None = None
    conv_in_kernel: PositiveInt = 3
    conv_out_kernel: PositiveInt = 3
    projection_class_embeddings_input_dim: PositiveInt | None = None
    attention_type: str = "default"
    class_embeddings_concat: bool = False
    #: used by diffusers' UNetMidBlock2DSimpleCrossAttn only: no effect on these blocks
    mid_block_only_cross_attention: bool | None = None
    #: used by diffusers' SimpleCrossAttn blocks only: no effect on these blocks
    cross_attention_norm: str | None = None
    addition_embed_type_num_heads: PositiveInt = 64

    @field_validator("down_block_types", "up_block_types", mode="before")
    @classmethod
    def _drop_legacy_prefix(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return tuple(v.removeprefix(_LEGACY_BLOCK_PREFIX) if isinstance(v, str) else v for v in value)
        return value

    @field_validator("act_fn", "time_embedding_act_fn", "timestep_post_act", mode="before")
    @classmethod
    def _lowercase_activation(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _default_hid_dim_type(cls, data: Any) -> Any:
        # diffusers turns an encoder_hid_dim without a type into 'text_proj' and records it
        if isinstance(data, Mapping) and data.get("encoder_hid_dim") is not None:
            if data.get("encoder_hid_dim_type") is None:
                return {**data, "encoder_hid_dim_type": "text_proj"}
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> UNet2DConditionConfig:
        problems = condition_config_problems(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # -- derived values -----------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return len(self.down_block_types)

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding MLP's output."""
        factor = 2 if self.time_embedding_type == "fourier" else 4
        return self.time_embedding_dim or factor * self.block_out_channels[0]

    @property
    def timestep_input_dim(self) -> int:
        """Width of the projected timesteps that enter the time embedding MLP."""
        return self.time_embed_dim if self.time_embedding_type == "fourier" else self.block_out_channels[0]

    @property
    def blocks_time_embed_dim(self) -> int:
        """Width of the embedding the resnets get (doubled when the class embedding is concatenated)."""
        return 2 * self.time_embed_dim if self.class_embeddings_concat else self.time_embed_dim

    def per_block(self, name: str) -> tuple[Any, ...]:
        """The per-down-block values of option ``name`` (one value repeated for every block)."""
        value = getattr(self, name)
        return tuple(value) if isinstance(value, tuple) else (value,) * self.num_blocks

    @property
    def uses_k_blocks(self) -> bool:
        """Whether the UNet is built from diffusers' K-diffusion blocks (the x2 latent upscaler)."""
        return any(t in K_BLOCKS for t in (*self.down_block_types, *self.up_block_types))

    @property
    def heads(self) -> tuple[int, ...]:
        """Attention heads per down block (diffusers reads ``attention_head_dim`` as head counts)."""
        return self.per_block("attention_head_dim")

    @property
    def up_transformer_layers(self) -> tuple[int | tuple[int, ...], ...]:
        """Transformer depths of the up blocks, in up-block order."""
        if self.reverse_transformer_layers_per_block is not None:
            return self.reverse_transformer_layers_per_block
        return self.per_block("transformer_layers_per_block")[::-1]


def condition_config_problems(cfg: UNet2DConditionConfig) -> list[str]:
    """Cross-field inconsistencies of ``cfg``, each naming the fields involved and the fix."""
    problems = []
    n = len(cfg.down_block_types)
    for name, refused in _NOT_IMPLEMENTED.items():
        if getattr(cfg, name) in refused:
            problems.append(
                f"{name}={getattr(cfg, name)!r} is a diffusers option that diffkit's UNet2DConditionModel does not "
                "implement (it is not used by the Stable Diffusion 1.x/2.x/XL checkpoints)"
            )
    if cfg.attention_type != "default" and cfg.attention_type not in _NOT_IMPLEMENTED["attention_type"]:
        problems.append(f"attention_type={cfg.attention_type!r} is unknown; use 'default'")
    if cfg.addition_embed_type not in (None, "text", "text_time", "image", *_NOT_IMPLEMENTED["addition_embed_type"]):
        problems.append(
            f"addition_embed_type={cfg.addition_embed_type!r} is unknown; allowed: None, 'text', 'text_time', 'image'"
        )
    if cfg.encoder_hid_dim_type not in (None, "text_proj", *_NOT_IMPLEMENTED["encoder_hid_dim_type"]):
        problems.append(f"encoder_hid_dim_type={cfg.encoder_hid_dim_type!r} is unknown; allowed: None, 'text_proj'")
    if cfg.num_attention_heads is not None:
        problems.append(
            "num_attention_heads must be unset: diffusers' UNet2DConditionModel refuses it, so a checkpoint with it "
            "could not load there; give the number of heads per block in attention_head_dim"
        )
    if cfg.dual_cross_attention:
        problems.append(
            "dual_cross_attention=True (Versatile Diffusion's DualTransformer2DModel) is not implemented in diffkit"
        )
    if n == 0:
        problems.append("down_block_types must list at least one block")
    if len(cfg.block_out_channels) != n:
        problems.append(
            f"block_out_channels has {len(cfg.block_out_channels)} entries but down_block_types has {n}; "
            "give one width per down block"
        )
    if len(cfg.up_block_types) != n:
        problems.append(
            f"up_block_types has {len(cfg.up_block_types)} entries but down_block_types has {n}; "
            "they must have the same length"
        )
    for name in (
        "only_cross_attention",
        "attention_head_dim",
        "cross_attention_dim",
        "layers_per_block",
        "transformer_layers_per_block",
        "reverse_transformer_layers_per_block",
    ):
        value = getattr(cfg, name)
        if isinstance(value, tuple) and len(value) != n:
            problems.append(f"{name} has {len(value)} entries but there are {n} down blocks; give one per block")
    if problems:
        return problems

    nested = isinstance(cfg.transformer_layers_per_block, tuple) and any(
        isinstance(v, tuple) for v in cfg.transformer_layers_per_block
    )
    if nested and cfg.reverse_transformer_layers_per_block is None:
        problems.append(
            "transformer_layers_per_block lists per-layer depths; then reverse_transformer_layers_per_block must "
            "give the up blocks' depths too"
        )
    if cfg.uses_k_blocks:
        problems.extend(_k_config_problems(cfg))
    elif cfg.norm_num_groups is None:
        problems.append(
            "norm_num_groups=None only suits the K-diffusion blocks (KDownBlock2D, ...); the resnets and "
            "transformers of CrossAttn/Down/Up blocks need a GroupNorm group count"
        )
    groups = cfg.norm_num_groups
    for i, width in enumerate(cfg.block_out_channels):
        if groups is not None and (width % groups) and (i == 0 or not cfg.uses_k_blocks):
            problems.append(f"block_out_channels[{i}]={width} is not divisible by norm_num_groups={groups}")
        heads = cfg.heads[i]
        if heads > width:
            meaning = "the width of each head" if cfg.uses_k_blocks else "the number of heads"
            problems.append(f"attention_head_dim[{i}]={heads} ({meaning}) exceeds block_out_channels[{i}]={width}")
    for name in ("conv_in_kernel", "conv_out_kernel"):
        if getattr(cfg, name) % 2 == 0:
            problems.append(f"{name}={getattr(cfg, name)} must be odd so the convolution keeps the sample size")
    if cfg.time_embedding_type == "fourier" and cfg.time_embed_dim % 2:
        problems.append(f"time_embedding_type='fourier' needs an even time_embedding_dim, got {cfg.time_embed_dim}")
    projected_class = cfg.class_embed_type in ("projection", "simple_projection")
    if projected_class and cfg.projection_class_embeddings_input_dim is None:
        problems.append(f"class_embed_type={cfg.class_embed_type!r} needs projection_class_embeddings_input_dim")
    if cfg.addition_embed_type == "text_time":
        for name in ("addition_time_embed_dim", "projection_class_embeddings_input_dim"):
            if getattr(cfg, name) is None:
                problems.append(f"addition_embed_type='text_time' needs {name}")
    if cfg.addition_embed_type == "image" and cfg.encoder_hid_dim is None:
        problems.append("addition_embed_type='image' needs encoder_hid_dim (the width of the image embeddings)")
    if cfg.addition_embed_type == "text":
        text_dim = cfg.encoder_hid_dim if cfg.encoder_hid_dim is not None else cfg.cross_attention_dim
        if not isinstance(text_dim, int):
            problems.append("addition_embed_type='text' needs one cross_attention_dim (or an encoder_hid_dim)")
        elif text_dim % cfg.addition_embed_type_num_heads:
            problems.append(
                f"addition_embed_type='text': the text width {text_dim} is not divisible by "
                f"addition_embed_type_num_heads={cfg.addition_embed_type_num_heads}"
            )
    if cfg.class_embeddings_concat and cfg.addition_embed_type is not None:
        problems.append(
            "class_embeddings_concat=True doubles the time embedding's width, so no addition_embed_type (whose "
            "embedding has the single width) can be added to it; unset one of them"
        )
    if cfg.class_embeddings_concat and cfg.class_embed_type is None and cfg.num_class_embeds is None:
        problems.append("class_embeddings_concat=True needs a class embedding (class_embed_type or num_class_embeds)")
    if cfg.encoder_hid_dim_type == "text_proj" and not isinstance(cfg.cross_attention_dim, int):
        problems.append("encoder_hid_dim (a text projection) needs one cross_attention_dim for every block")
    return problems


def _k_config_problems(cfg: UNet2DConditionConfig) -> list[str]:
    """Constraints of the K-diffusion blocks: used alone, without a mid block, widths in groups of 32."""
    problems = []
    plain = [t for t in (*cfg.down_block_types, *cfg.up_block_types) if t not in K_BLOCKS]
    if plain:
        problems.append(
            f"down_block_types/up_block_types mix K-diffusion blocks with {sorted(set(plain))}; "
            "a UNet uses K blocks only or none"
        )
    if cfg.mid_block_type is not None:
        problems.append("K-diffusion blocks have no mid block: set mid_block_type to None")
    for i, width in enumerate(cfg.block_out_channels):
        if width % K_GROUP_SIZE:
            problems.append(
                f"block_out_channels[{i}]={width}: K-diffusion blocks normalise groups of {K_GROUP_SIZE} channels, "
                f"so widths must be multiples of {K_GROUP_SIZE}"
            )
    if not isinstance(cfg.cross_attention_dim, int) and len(set(cfg.cross_attention_dim)) > 1:
        problems.append("K-diffusion cross-attention blocks need one cross_attention_dim for every block")
    if problems:
        return problems
    widths, n = cfg.block_out_channels, len(cfg.block_out_channels)
    for i, up_type in enumerate(cfg.up_block_types):
        level = n - 1 - i
        # only a last KCrossAttnDownBlock2D (it does not downsample) hands its up block no skip
        skipless = i == 0 and cfg.down_block_types[-1] == "KCrossAttnDownBlock2D"
        in_width, out_width = widths[max(level - 1, 0)], widths[level]
        # diffusers' rule: the first K up block is one whose widths and time-embedding width are equal
        first = up_type == "KCrossAttnUpBlock2D" and in_width == out_width == cfg.blocks_time_embed_dim
        if first != skipless:
            problems.append(
                f"up_block_types[{i}]={up_type!r} "
                + ("expects no skip connection" if first else "expects a skip connection")
                + " but "
                + ("the matching down block passes one" if first else "the last KCrossAttnDownBlock2D passes none")
                + f" (a K up block takes no skip exactly when block_out_channels[{max(level - 1, 0)}], "
                f"block_out_channels[{level}] and the time embedding width {cfg.blocks_time_embed_dim} are equal)"
            )
    return problems


def _mask_bias(mask: torch.Tensor | None, dtype: torch.dtype, name: str) -> torch.Tensor | None:
    """A ``(batch, tokens)`` keep mask (1/True keep, 0/False drop) as a ``(batch, 1, tokens)`` bias."""
    if mask is None:
        return None
    if mask.ndim != 2:
        raise ValueError(f"{name} must have shape (batch, tokens), got {tuple(mask.shape)}")
    # bias = (1 - mask) * -10000
    return ((1 - mask.to(dtype)) * MASK_BIAS).unsqueeze(1)


class UNet2DConditionModel(Model):
    """A UNet that maps a noisy ``(batch, in_channels, h, w)`` latent, a timestep and the text
    encoder's ``(batch, tokens, cross_attention_dim)`` hidden states to a
    ``(batch, out_channels, h, w)`` prediction.

    Optional conditioning: class labels (the x4 upscaler's noise level), SDXL's pooled text
    embeddings and size/crop ids (``added_cond_kwargs``), LCM's guidance embedding
    (``timestep_cond``), ControlNet residuals and T2I-Adapter features.
    """

    config_class = UNet2DConditionConfig
    repeated_blocks = ("ResnetBlock2D", "BasicTransformerBlock")
    config: UNet2DConditionConfig

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        widths = cfg.block_out_channels

        self.conv_in = nn.Conv2d(
            cfg.in_channels, widths[0], kernel_size=cfg.conv_in_kernel, padding=(cfg.conv_in_kernel - 1) // 2
        )
        self.time_proj = _time_projection(cfg)
        self.time_embedding = TimestepEmbedding(
            cfg.timestep_input_dim,
            cfg.time_embed_dim,
            act_fn=cfg.act_fn,
            post_act_fn=cfg.timestep_post_act,
            cond_proj_dim=cfg.time_cond_proj_dim,
        )
        self.encoder_hid_proj = (
            nn.Linear(cfg.encoder_hid_dim, cfg.cross_attention_dim)  # type: ignore[arg-type]
            if cfg.encoder_hid_dim_type == "text_proj"
            else None
        )
        self.class_embedding = _class_embedding(cfg)
        if cfg.addition_embed_type == "text_time":
            assert cfg.addition_time_embed_dim is not None
            self.add_time_proj = SinusoidalProjection(cfg.addition_time_embed_dim, cfg.flip_sin_to_cos, cfg.freq_shift)
        self.add_embedding = _addition_embedding(cfg)
        self.time_embed_act = activation(cfg.time_embedding_act_fn) if cfg.time_embedding_act_fn else None

        opts = block_options(cfg)
        self.down_blocks = nn.ModuleList(build_down_blocks(cfg, opts))
        self.mid_block = build_mid_block(cfg, opts)
        self.up_blocks = nn.ModuleList(build_up_blocks(cfg, opts))

        if cfg.norm_num_groups is not None:
            self.conv_norm_out: nn.Module | None = nn.GroupNorm(cfg.norm_num_groups, widths[0], eps=cfg.norm_eps)
            self.conv_act: nn.Module | None = activation(cfg.act_fn)
        else:
            self.conv_norm_out = self.conv_act = None
        self.conv_out = nn.Conv2d(
            widths[0], cfg.out_channels, kernel_size=cfg.conv_out_kernel, padding=(cfg.conv_out_kernel - 1) // 2
        )

    @property
    def sample_size(self) -> int | tuple[int, int] | None:
        return self.config.sample_size

    @property
    def num_upsamplers(self) -> int:
        """How many times the up path doubles the resolution."""
        return len(self.up_blocks) - 1

    # -- embeddings ---------------------------------------------------------------------
    def _time_embed(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        timestep_cond: torch.Tensor | None,
        class_labels: torch.Tensor | None,
    ) -> torch.Tensor:
        timesteps = broadcast_timesteps(timestep, sample.shape[0], sample.device, keep_fractions=True)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype=sample.dtype), timestep_cond)
        if self.class_embedding is None:
            if class_labels is not None:
                raise ValueError(
                    "class_labels were given but this UNet2DConditionModel has no class embedding "
                    "(its config sets neither class_embed_type nor num_class_embeds)"
                )
            return emb
        if class_labels is None:
            raise ValueError(
                "class_labels are required: this UNet2DConditionModel is class-conditioned "
                f"(class_embed_type={self.config.class_embed_type!r}, num_class_embeds={self.config.num_class_embeds})"
            )
        if self.config.class_embed_type == "timestep":
            class_labels = self.time_proj(class_labels).to(dtype=sample.dtype)
        class_emb = self.class_embedding(class_labels).to(dtype=sample.dtype)
        if self.config.class_embeddings_concat:
            return torch.cat([emb, class_emb], dim=-1)
        return emb + class_emb

    def _addition_embed(
        self, emb: torch.Tensor, encoder_hidden_states: torch.Tensor, added: Mapping[str, torch.Tensor]
    ) -> torch.Tensor | None:
        kind = self.config.addition_embed_type
        if kind is None:
            return None
        if kind == "text":
            return self.add_embedding(encoder_hidden_states)
        if kind == "text_time":
            text_embeds = _required(added, "text_embeds", kind)
            time_ids = _required(added, "time_ids", kind)
            time_embeds = self.add_time_proj(time_ids.flatten()).reshape(text_embeds.shape[0], -1)
            return self.add_embedding(torch.cat([text_embeds, time_embeds], dim=-1).to(emb.dtype))
        return self.add_embedding(_required(added, "image_embeds", kind))

    # -- forward ------------------------------------------------------------------------
    def _check_inputs(self, sample: torch.Tensor, encoder_hidden_states: torch.Tensor | None) -> None:
        cfg = self.config
        if sample.ndim != 4 or sample.shape[1] != cfg.in_channels:
            raise ValueError(
                f"sample must have shape (batch, {cfg.in_channels}, height, width) for this UNet "
                f"(in_channels={cfg.in_channels}), got {tuple(sample.shape)}"
            )
        uses_context = cfg.addition_embed_type == "text" or any(
            isinstance(block, _CONTEXT_BLOCKS)
            for block in (*self.down_blocks, *self.up_blocks, self.mid_block)
        )
        if not uses_context:
            return
        if encoder_hidden_states is None or encoder_hidden_states.ndim != 3:
            got = None if encoder_hidden_states is None else tuple(encoder_hidden_states.shape)
            raise ValueError(f"encoder_hidden_states must have shape (batch, tokens, width), got {got}")
        projected = cfg.encoder_hid_dim_type == "text_proj"
        widths = {cfg.encoder_hid_dim} if projected else set(cfg.per_block("cross_attention_dim"))
        width = encoder_hidden_states.shape[-1]
        if len(widths) == 1 and width not in widths:
            (expected,) = widths
            name = "encoder_hid_dim" if projected else "cross_attention_dim"
            raise ValueError(
                f"encoder_hidden_states have width {width} but this UNet's {name} is {expected}: "
                "use the text encoder this UNet was trained with"
            )

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor,
        class_labels: torch.Tensor | None = None,
        timestep_cond: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cross_attention_kwargs: Mapping[str, Any] | None = None,
        added_cond_kwargs: Mapping[str, torch.Tensor] | None = None,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
        down_intrablock_additional_residuals: Sequence[torch.Tensor] | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> UNet2DConditionOutput | tuple[torch.Tensor]:
        """Predict for ``sample`` at ``timestep`` (a number, a 0-d tensor or one per batch entry).

        ``encoder_hidden_states``: ``(batch, tokens, dim)`` text-encoder states.
        ``attention_mask``/``encoder_attention_mask``: ``(batch, tokens)`` keep masks (1 keep,
        0 drop) for the first (self, or cross with ``only_cross_attention``) and the second
        (cross) attention of every transformer block. ``cross_attention_kwargs`` may carry a LoRA
        ``scale``, which has nothing to scale while no LoRA is loaded. ``added_cond_kwargs``:
        ``text_embeds`` and ``time_ids`` (SDXL), ``image_embeds`` (``addition_embed_type='image'``).
        ``down_block_additional_residuals`` + ``mid_block_additional_residual``: ControlNet
        outputs added to the skip connections; ``down_intrablock_additional_residuals``:
        T2I-Adapter features added inside the down path.
        """
        _check_cross_attention_kwargs(cross_attention_kwargs)
        self._check_inputs(sample, encoder_hidden_states)
        up_factor = 2**self.num_upsamplers
        forward_upsample_size = any(dim % up_factor != 0 for dim in sample.shape[-2:])
        cond_bias = _mask_bias(attention_mask, sample.dtype, "attention_mask")
        context_bias = _mask_bias(encoder_attention_mask, sample.dtype, "encoder_attention_mask")

        if self.config.center_input_sample:
            sample = 2 * sample - 1.0
        emb = self._time_embed(sample, timestep, timestep_cond, class_labels)
        aug = self._addition_embed(emb, encoder_hidden_states, added_cond_kwargs or {})
        if aug is not None:
            emb = emb + aug
        if self.time_embed_act is not None:
            emb = self.time_embed_act(emb)
        if self.encoder_hid_proj is not None:
            encoder_hidden_states = self.encoder_hid_proj(encoder_hidden_states)
        cond = Conditioning(encoder_hidden_states, cond_bias, context_bias)

        is_controlnet = mid_block_additional_residual is not None and down_block_additional_residuals is not None
        intrablock = list(down_intrablock_additional_residuals or [])
        if down_intrablock_additional_residuals is None and not is_controlnet and down_block_additional_residuals:
            # diffusers' older T2I-Adapter calling convention: features without a mid residual
            intrablock = list(down_block_additional_residuals)

        if self.config.uses_k_blocks and (down_block_additional_residuals or down_intrablock_additional_residuals):
            raise ValueError(
                "ControlNet residuals and T2I-Adapter features are not supported by the K-diffusion blocks "
                "(diffusers does not support them there either)"
            )

        hidden = self.conv_in(sample)
        residuals: tuple[torch.Tensor, ...] = (hidden,)
        for block in self.down_blocks:
            if isinstance(block, (KDownBlock2D, KCrossAttnDownBlock2D)):
                hidden, block_residuals = block(hidden, emb, cond)
            elif isinstance(block, CrossAttnDownBlock2D):
                hidden, block_residuals = block(hidden, emb, cond, intrablock.pop(0) if intrablock else None)
            else:
                hidden, block_residuals, _ = block(hidden, emb, None)
                if intrablock:
                    # the feature lands on the block's output, which is also its last residual
                    hidden = hidden + intrablock.pop(0)
                    block_residuals = (*block_residuals[:-1], hidden)
            residuals += block_residuals

        if is_controlnet:
            assert down_block_additional_residuals is not None
            if len(down_block_additional_residuals) != len(residuals):
                raise ValueError(
                    f"down_block_additional_residuals has {len(down_block_additional_residuals)} tensors but this "
                    f"UNet has {len(residuals)} skip connections; pass one per skip connection"
                )
            residuals = tuple(r + extra for r, extra in zip(residuals, down_block_additional_residuals, strict=True))

        if self.mid_block is not None:
            if isinstance(self.mid_block, UNetMidBlock2DCrossAttn):
                hidden = self.mid_block(hidden, emb, cond)
            else:
                hidden = self.mid_block(hidden, emb)
            if intrablock and hidden.shape == intrablock[0].shape:
                hidden = hidden + intrablock.pop(0)
        if is_controlnet:
            hidden = hidden + mid_block_additional_residual

        last = len(self.up_blocks) - 1
        for i, block in enumerate(self.up_blocks):
            taken = len(block.resnets)
            block_residuals, residuals = residuals[-taken:], residuals[:-taken]
            if isinstance(block, (KUpBlock2D, KCrossAttnUpBlock2D)):
                hidden = block(hidden, block_residuals, emb, cond)
                continue
            size = tuple(residuals[-1].shape[2:]) if forward_upsample_size and i != last else None
            if isinstance(block, CrossAttnUpBlock2D):
                hidden = block(hidden, block_residuals, emb, cond, size)
            else:
                hidden, _ = block(hidden, block_residuals, emb, None, upsample_size=size)

        if self.conv_norm_out is not None and self.conv_act is not None:
            hidden = self.conv_act(self.conv_norm_out(hidden))
        out = self.conv_out(hidden)
        if not return_dict:
            return (out,)
        return UNet2DConditionOutput(sample=out)


def block_options(cfg: UNet2DConditionConfig) -> BlockOptions:
    """The resnet settings every block of a UNet built from ``cfg`` shares."""
    return BlockOptions(
        temb_channels=cfg.blocks_time_embed_dim,
        eps=cfg.norm_eps,
        act_fn=cfg.act_fn,
        dropout=cfg.dropout,
        time_embedding_norm=cfg.resnet_time_scale_shift,
        groups=cfg.norm_num_groups,
    )


def _attn_options(
    cfg: UNet2DConditionConfig, level: int, depth: int | tuple[int, ...], only_cross_attention: bool
) -> CrossAttnOptions:
    """Transformer settings of the blocks at resolution ``level`` (0: the highest)."""
    return CrossAttnOptions(
        heads=cfg.heads[level],
        context_dim=cfg.per_block("cross_attention_dim")[level],
        layers=depth,
        linear_projection=cfg.use_linear_projection,
        only_cross_attention=only_cross_attention,
        upcast_attention=bool(cfg.upcast_attention),
    )


def build_down_blocks(cfg: UNet2DConditionConfig, opts: BlockOptions) -> list[nn.Module]:
    """The down path: one block per width, each but the last halving the resolution."""
    widths, n = cfg.block_out_channels, len(cfg.block_out_channels)
    layers = cfg.per_block("layers_per_block")
    depths = cfg.per_block("transformer_layers_per_block")
    only_cross = cfg.per_block("only_cross_attention")
    blocks: list[nn.Module] = []
    for i, block_type in enumerate(cfg.down_block_types):
        args = (widths[max(i - 1, 0)], widths[i], layers[i], opts)
        sampling = dict(add_downsample=i != n - 1, downsample_padding=cfg.downsample_padding)
        k_args = dict(eps=cfg.norm_eps, act_fn=cfg.act_fn, dropout=cfg.dropout, add_downsample=i != n - 1)
        if block_type == "CrossAttnDownBlock2D":
            blocks.append(CrossAttnDownBlock2D(*args, _attn_options(cfg, i, depths[i], only_cross[i]), **sampling))
        elif block_type == "KDownBlock2D":
            blocks.append(KDownBlock2D(*args[:3], opts.temb_channels, **k_args))
        elif block_type == "KCrossAttnDownBlock2D":
            context_dim = cfg.per_block("cross_attention_dim")[i]
            blocks.append(
                KCrossAttnDownBlock2D(
                    *args[:3], opts.temb_channels, head_dim=cfg.heads[i], context_dim=context_dim, **k_args
                )
            )
        else:
            blocks.append(DownBlock2D(*args, **sampling))
    return blocks


def build_mid_block(cfg: UNet2DConditionConfig, opts: BlockOptions) -> nn.Module | None:
    """The block at the lowest resolution, or ``None`` (``mid_block_type=None``)."""
    width = cfg.block_out_channels[-1]
    if cfg.mid_block_type == "UNetMidBlock2DCrossAttn":
        # with per-layer depths the mid block reads the first depth of the last down block
        depth = cfg.per_block("transformer_layers_per_block")[-1]
        attn = _attn_options(cfg, len(cfg.block_out_channels) - 1, depth, False)
        return UNetMidBlock2DCrossAttn(width, opts, attn, output_scale_factor=cfg.mid_block_scale_factor)
    if cfg.mid_block_type == "UNetMidBlock2D":
        return UNetMidBlock2D(
            width,
            opts,
            head_dim=None,
            attn_groups=None,
            add_attention=False,
            output_scale_factor=cfg.mid_block_scale_factor,
            num_layers=0,
        )
    return None


def build_up_blocks(cfg: UNet2DConditionConfig, opts: BlockOptions) -> list[nn.Module]:
    """The up path, lowest resolution first: each block takes one more resnet than its down
    block (for the downsampler's residual) and each but the last doubles the resolution."""
    widths, n = cfg.block_out_channels, len(cfg.block_out_channels)
    layers = cfg.per_block("layers_per_block")
    only_cross = cfg.per_block("only_cross_attention")
    blocks: list[nn.Module] = []
    for i, (block_type, depth) in enumerate(zip(cfg.up_block_types, cfg.up_transformer_layers, strict=True)):
        level = n - 1 - i
        args = (widths[max(level - 1, 0)], widths[min(level + 1, n - 1)], widths[level], layers[level] + 1, opts)
        k_args = dict(eps=cfg.norm_eps, act_fn=cfg.act_fn, dropout=cfg.dropout, add_upsample=i != n - 1)
        k_widths = (widths[max(level - 1, 0)], widths[level], layers[level] + 1, opts.temb_channels)
        if block_type == "CrossAttnUpBlock2D":
            attn = _attn_options(cfg, level, depth, only_cross[level])
            blocks.append(CrossAttnUpBlock2D(*args, attn, add_upsample=i != n - 1))
        elif block_type == "KUpBlock2D":
            blocks.append(KUpBlock2D(*k_widths, **k_args))
        elif block_type == "KCrossAttnUpBlock2D":
            context_dim = cfg.per_block("cross_attention_dim")[level]
            # diffusers hands the up blocks attention_head_dim in down-block order (not reversed)
            blocks.append(KCrossAttnUpBlock2D(*k_widths, head_dim=cfg.heads[i], context_dim=context_dim, **k_args))
        else:
            blocks.append(UpBlock2D(*args, add_upsample=i != n - 1))
    return blocks


_CONTEXT_BLOCKS = (
    CrossAttnDownBlock2D,
    CrossAttnUpBlock2D,
    UNetMidBlock2DCrossAttn,
    KCrossAttnDownBlock2D,
    KCrossAttnUpBlock2D,
)


def _required(added: Mapping[str, torch.Tensor], key: str, kind: str) -> torch.Tensor:
    if key not in added:
        raise ValueError(
            f"this UNet2DConditionModel has addition_embed_type={kind!r}, so added_cond_kwargs must contain {key!r}"
        )
    return added[key]


def _check_cross_attention_kwargs(kwargs: Mapping[str, Any] | None) -> None:
    """Accept ``scale`` (a LoRA weight, applied to nothing while no LoRA is loaded); refuse the rest."""
    unknown = sorted(set(kwargs or {}) - {"scale"})
    if unknown:
        raise ValueError(
            f"cross_attention_kwargs {unknown} are not supported: diffkit's UNet2DConditionModel takes only 'scale'"
        )


def _time_projection(cfg: UNet2DConditionConfig) -> nn.Module:
    """The weightless (positional) or fixed random (Fourier) projection of the timesteps."""
    if cfg.time_embedding_type == "fourier":
        return GaussianFourierProjection(cfg.time_embed_dim // 2, log=False, flip_sin_to_cos=cfg.flip_sin_to_cos)
    return SinusoidalProjection(cfg.block_out_channels[0], cfg.flip_sin_to_cos, cfg.freq_shift)


def _class_embedding(cfg: UNet2DConditionConfig) -> nn.Module | None:
    """The class-label embedding: a table, an MLP, a linear map, or identity."""
    width = cfg.time_embed_dim
    if cfg.class_embed_type is None and cfg.num_class_embeds is not None:
        return nn.Embedding(cfg.num_class_embeds, width)
    if cfg.class_embed_type == "timestep":
        return TimestepEmbedding(cfg.timestep_input_dim, width, act_fn=cfg.act_fn)
    if cfg.class_embed_type == "identity":
        return nn.Identity()
    if cfg.class_embed_type == "projection":
        assert cfg.projection_class_embeddings_input_dim is not None
        return TimestepEmbedding(cfg.projection_class_embeddings_input_dim, width)
    if cfg.class_embed_type == "simple_projection":
        assert cfg.projection_class_embeddings_input_dim is not None
        return nn.Linear(cfg.projection_class_embeddings_input_dim, width)
    return None


def _addition_embedding(cfg: UNet2DConditionConfig) -> nn.Module | None:
    """The embedding of ``addition_embed_type`` added to the time embedding."""
    width = cfg.time_embed_dim
    if cfg.addition_embed_type == "text":
        text_dim = cfg.encoder_hid_dim if cfg.encoder_hid_dim is not None else cfg.cross_attention_dim
        assert isinstance(text_dim, int)
        return TextTimeEmbedding(text_dim, width, num_heads=cfg.addition_embed_type_num_heads)
    if cfg.addition_embed_type == "text_time":
        assert cfg.projection_class_embeddings_input_dim is not None
        return TimestepEmbedding(cfg.projection_class_embeddings_input_dim, width)
    if cfg.addition_embed_type == "image":
        assert cfg.encoder_hid_dim is not None
        return ImageTimeEmbedding(cfg.encoder_hid_dim, width)
    return None

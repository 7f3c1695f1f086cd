"""``UNet2DConditionConfig``: the typed configuration of ``UNet2DConditionModel`` and its
cross-field checks, each naming the fields involved and the fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator

from diffkit.config import Config

from .activations import ActivationName
from .k_blocks import K_BLOCKS
from .k_resnet import K_GROUP_SIZE

CondDownBlockType = Literal["CrossAttnDownBlock2D", "DownBlock2D", "KDownBlock2D", "KCrossAttnDownBlock2D"]
CondUpBlockType = Literal["CrossAttnUpBlock2D", "UpBlock2D", "KUpBlock2D", "KCrossAttnUpBlock2D"]
CondMidBlockType = Literal["UNetMidBlock2DCrossAttn", "UNetMidBlock2D"]

#: diffusers accepts block names with this prefix and drops it
_LEGACY_BLOCK_PREFIX = "UNetRes"
#: option values diffusers knows that this implementation does not build, per field
_NOT_IMPLEMENTED = {
    "addition_embed_type": {"text_image", "image_hint"},
    "encoder_hid_dim_type": {"text_image_proj", "image_proj", "ip_image_proj"},
    "attention_type": {"gated", "gated-text-image"},
}

PositiveInts = PositiveInt | tuple[PositiveInt, ...]


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

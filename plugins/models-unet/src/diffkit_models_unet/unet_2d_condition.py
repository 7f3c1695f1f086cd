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
from typing import Any

import torch
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput

from .activations import activation
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
from .k_blocks import KCrossAttnDownBlock2D, KCrossAttnUpBlock2D, KDownBlock2D, KUpBlock2D
from .unet_2d import broadcast_timesteps
from .unet_2d_condition_config import UNet2DConditionConfig, condition_config_problems

__all__ = ["UNet2DConditionConfig", "UNet2DConditionModel", "UNet2DConditionOutput", "condition_config_problems"]

#: the value a masked-out token adds to the attention scores, as in diffusers
MASK_BIAS = -10000.0


@dataclasses.dataclass
class UNet2DConditionOutput(BaseOutput):
    """``sample``: the model output, shaped like the input sample (with ``out_channels``)."""

    sample: torch.Tensor


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

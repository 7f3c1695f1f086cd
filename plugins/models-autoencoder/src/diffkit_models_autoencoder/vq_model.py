"""``VQModel``: the vector-quantized autoencoder of latent diffusion (VQ-GAN) and MoVQ.

Same config keys, defaults, state-dict keys and numbers as diffusers' ``VQModel``, so its
checkpoints (``CompVis/ldm-celebahq-256``'s ``vqvae``, Kandinsky's ``movq``, ...) load
unchanged, including those that still use the pre-0.15 attention parameter names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from pydantic import PositiveInt
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput
from diffkit_models_unet.unet_2d import legacy_attention_key

from .autoencoder_config import AutoencoderConfig
from .blocks import NormType
from .decoder import Decoder, DecoderOutput
from .encoder import Encoder
from .quantizer import VectorQuantizer

#: commitment weight of diffusers' VQModel quantizer
VQ_BETA = 0.25


@dataclasses.dataclass
class VQEncoderOutput(BaseOutput):
    """``latents``: the encoder output after ``quant_conv``, before quantization."""

    latents: torch.Tensor


class VQModelConfig(AutoencoderConfig):
    """Configuration of :class:`VQModel`: diffusers' keys and defaults."""

    owner_name: ClassVar[str] = "VQModel"

    num_vq_embeddings: PositiveInt = 256
    vq_embed_dim: PositiveInt | None = None
    norm_type: NormType = "group"
    lookup_from_codebook: bool = False

    @property
    def codebook_dim(self) -> int:
        """Width of the codebook vectors: ``vq_embed_dim``, else ``latent_channels``."""
        return self.vq_embed_dim if self.vq_embed_dim is not None else self.latent_channels


class VQModel(Model):
    """Encode images to latents, quantize them against a learned codebook, decode them back.

    ``encode`` returns the unquantized latents; ``decode`` quantizes them first unless
    ``force_not_quantize`` (with ``lookup_from_codebook`` it then reads codebook indices).
    Latent diffusion samples in the unquantized space and divides by ``scaling_factor``
    before decoding.
    """

    config_class = VQModelConfig
    config: VQModelConfig

    def __init__(self, config: Config | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        cfg = self.config
        self.encoder = Encoder(
            cfg.in_channels,
            cfg.latent_channels,
            cfg.down_block_types,
            cfg.block_out_channels,
            cfg.layers_per_block,
            cfg.norm_num_groups,
            cfg.act_fn,
            double_z=False,
            mid_block_add_attention=cfg.mid_block_add_attention,
        )
        self.quant_conv = nn.Conv2d(cfg.latent_channels, cfg.codebook_dim, 1)
        self.quantize = VectorQuantizer(cfg.num_vq_embeddings, cfg.codebook_dim, beta=VQ_BETA)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_dim, cfg.latent_channels, 1)
        self.decoder = Decoder(
            cfg.latent_channels,
            cfg.out_channels,
            cfg.up_block_types,
            cfg.block_out_channels,
            cfg.layers_per_block,
            cfg.norm_num_groups,
            cfg.act_fn,
            norm_type=cfg.norm_type,
            mid_block_add_attention=cfg.mid_block_add_attention,
        )

    @classmethod
    def convert_state_dict(cls, state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
        """Rename the attention parameters of old diffusers checkpoints (``query``, ``key``,
        ``value``, ``proj_attn``) to ``to_q``, ``to_k``, ``to_v``, ``to_out.0``."""
        return {legacy_attention_key(key): tensor for key, tensor in state.items()}

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> VQEncoderOutput | tuple[torch.Tensor]:
        """Images ``(batch, in_channels, h, w)`` to unquantized latents ``(batch, codebook_dim, h/f, w/f)``."""
        latents = self.quant_conv(self.encoder(x))
        return VQEncoderOutput(latents=latents) if return_dict else (latents,)

    def decode(
        self,
        h: torch.Tensor,
        force_not_quantize: bool = False,
        return_dict: bool = True,
        shape: Sequence[int] | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor, torch.Tensor]:
        """Latents to images, through the quantizer unless ``force_not_quantize``.

        With ``force_not_quantize`` and ``lookup_from_codebook``, ``h`` holds codebook indices
        and ``shape`` is ``(batch, height, width, channels)`` of the latents they build.
        ``commit_loss`` is the quantizer's loss, or zeros of shape ``(batch,)`` when skipped.
        """
        if not force_not_quantize:
            quant, commit_loss, _ = self.quantize(h)
        else:
            quant = self.quantize.get_codebook_entry(h, shape) if self.config.lookup_from_codebook else h
            commit_loss = torch.zeros(h.shape[0], device=h.device, dtype=h.dtype)
        dec = self.decoder(self.post_quant_conv(quant), quant if self.config.norm_type == "spatial" else None)
        if not return_dict:
            return dec, commit_loss
        return DecoderOutput(sample=dec, commit_loss=commit_loss)

    def forward(self, sample: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor, ...]:
        """Encode, quantize and decode ``sample``."""
        dec = self.decode(self.encode(sample).latents)
        assert isinstance(dec, DecoderOutput)
        if not return_dict:
            return dec.sample, dec.commit_loss  # type: ignore[return-value]
        return dec

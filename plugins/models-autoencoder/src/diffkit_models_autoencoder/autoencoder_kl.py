"""``AutoencoderKL``: the variational autoencoder of Stable Diffusion and its relatives.

Same config keys, defaults, state-dict keys and numbers as diffusers' ``AutoencoderKL``, so
the ``vae`` folders of SD 1.x/2.x/XL checkpoints (and fine-tuned VAEs) load unchanged,
including those that still use the pre-0.15 attention parameter names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from pydantic import PositiveInt, model_validator
from torch import nn

from diffkit.config import Config
from diffkit.model import Model
from diffkit.outputs import BaseOutput
from diffkit_models_unet.unet_2d import legacy_attention_key

from .autoencoder_config import AutoencoderConfig
from .decoder import Decoder, DecoderOutput
from .distribution import DiagonalGaussianDistribution
from .encoder import Encoder
from .tiling import tiled_map

#: share of a tile that overlaps its neighbour in tiled encoding and decoding (diffusers' value)
TILE_OVERLAP_FACTOR = 0.25


@dataclasses.dataclass
class AutoencoderKLOutput(BaseOutput):
    """``latent_dist``: the posterior over the latents of each encoded image."""

    latent_dist: DiagonalGaussianDistribution


class AutoencoderKLConfig(AutoencoderConfig):
    """Configuration of :class:`AutoencoderKL`: diffusers' keys and defaults."""

    owner_name: ClassVar[str] = "AutoencoderKL"

    latent_channels: PositiveInt = 4
    sample_size: PositiveInt | tuple[PositiveInt, PositiveInt] = 32
    shift_factor: float | None = None
    latents_mean: tuple[float, ...] | None = None
    latents_std: tuple[float, ...] | None = None
    force_upcast: bool = True
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True

    @model_validator(mode="after")
    def _check_latent_statistics(self) -> AutoencoderKLConfig:
        for key in ("latents_mean", "latents_std"):
            values = getattr(self, key)
            if values is not None and len(values) != self.latent_channels:
                raise ValueError(
                    f"{key} has {len(values)} entries but latent_channels is {self.latent_channels}; "
                    "give one value per latent channel"
                )
        if self.latents_std is not None and any(value <= 0 for value in self.latents_std):
            raise ValueError("latents_std must be positive (latents are divided by it)")
        return self

    @property
    def tile_size(self) -> int:
        """Side of the square image tiles of tiled encoding: ``sample_size`` (its height if a pair)."""
        return self.sample_size[0] if isinstance(self.sample_size, tuple) else self.sample_size


class AutoencoderKL(Model):
    """Encode images to a diagonal Gaussian over latents, decode latents back to images.

    Pipelines sample (or take the mode of) :attr:`AutoencoderKLOutput.latent_dist` and
    multiply by ``scaling_factor`` before diffusion; they divide by it before decoding.

    Two memory savers change how the work is split, each as diffusers does it:
    :meth:`enable_slicing` encodes and decodes one image of the batch at a time (same
    numbers), :meth:`enable_tiling` cuts images larger than ``tile_sample_min_size`` (latents
    larger than ``tile_latent_min_size``) into overlapping tiles blended at the seams
    (slightly different numbers, diffusers' ones). Both sizes, and ``tile_overlap_factor``, are
    plain attributes a caller may change.
    """

    config_class = AutoencoderKLConfig
    repeated_blocks = ("ResnetBlock2D",)
    config: AutoencoderKLConfig

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
            double_z=True,
            mid_block_add_attention=cfg.mid_block_add_attention,
        )
        self.decoder = Decoder(
            cfg.latent_channels,
            cfg.out_channels,
            cfg.up_block_types,
            cfg.block_out_channels,
            cfg.layers_per_block,
            cfg.norm_num_groups,
            cfg.act_fn,
            mid_block_add_attention=cfg.mid_block_add_attention,
        )
        moments = 2 * cfg.latent_channels
        self.quant_conv = nn.Conv2d(moments, moments, 1) if cfg.use_quant_conv else None
        self.post_quant_conv = (
            nn.Conv2d(cfg.latent_channels, cfg.latent_channels, 1) if cfg.use_post_quant_conv else None
        )
        self.use_slicing = False
        self.use_tiling = False
        self.tile_sample_min_size = cfg.tile_size
        self.tile_latent_min_size = int(cfg.tile_size / cfg.downscale_factor)
        self.tile_overlap_factor = TILE_OVERLAP_FACTOR

    @classmethod
    def convert_state_dict(cls, state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
        """Rename the attention parameters of old diffusers checkpoints (``query``, ``key``,
        ``value``, ``proj_attn``) to ``to_q``, ``to_k``, ``to_v``, ``to_out.0``."""
        return {legacy_attention_key(key): tensor for key, tensor in state.items()}

    # -- memory savers ----------------------------------------------------------------
    def enable_slicing(self) -> None:
        """Encode and decode one image of a batch at a time (less memory, same numbers)."""
        self.use_slicing = True

    def disable_slicing(self) -> None:
        """Encode and decode the whole batch at once again."""
        self.use_slicing = False

    def enable_tiling(self) -> None:
        """Encode and decode large images in overlapping tiles blended at the seams."""
        self.use_tiling = True

    def disable_tiling(self) -> None:
        """Encode and decode whole images again."""
        self.use_tiling = False

    # -- encoding ---------------------------------------------------------------------
    def _moments(self, x: torch.Tensor) -> torch.Tensor:
        """Mean and log-variance stacked on the channels, for one untiled batch."""
        moments = self.encoder(x)
        return self.quant_conv(moments) if self.quant_conv is not None else moments

    def _tiled_moments(self, x: torch.Tensor) -> torch.Tensor:
        return tiled_map(
            x,
            self._moments,
            tile_in=self.tile_sample_min_size,
            tile_out=self.tile_latent_min_size,
            overlap_factor=self.tile_overlap_factor,
        )

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and max(x.shape[-2:]) > self.tile_sample_min_size:
            return self._tiled_moments(x)
        return self._moments(x)

    def encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Images ``(batch, in_channels, h, w)`` to the posterior over their ``(h/f, w/f)`` latents.

        With slicing on, one image at a time; with tiling on, images above ``tile_sample_min_size`` in tiles.
        """
        self._check_input(x, "x", self.config.in_channels)
        if self.use_slicing and x.shape[0] > 1:
            moments = torch.cat([self._encode(one) for one in x.split(1)])
        else:
            moments = self._encode(x)
        posterior = DiagonalGaussianDistribution(moments)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def tiled_encode(
        self, x: torch.Tensor, return_dict: bool = True
    ) -> AutoencoderKLOutput | tuple[DiagonalGaussianDistribution]:
        """Encode ``x`` in tiles whatever its size (what :meth:`encode` does above the tile size with tiling on)."""
        self._check_input(x, "x", self.config.in_channels)
        posterior = DiagonalGaussianDistribution(self._tiled_moments(x))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    # -- decoding ---------------------------------------------------------------------
    def _untiled_decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.post_quant_conv is not None:
            z = self.post_quant_conv(z)
        return self.decoder(z)

    def _tiled_images(self, z: torch.Tensor) -> torch.Tensor:
        return tiled_map(
            z,
            self._untiled_decode,
            tile_in=self.tile_latent_min_size,
            tile_out=self.tile_sample_min_size,
            overlap_factor=self.tile_overlap_factor,
        )

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        if self.use_tiling and max(z.shape[-2:]) > self.tile_latent_min_size:
            return self._tiled_images(z)
        return self._untiled_decode(z)

    def decode(
        self, z: torch.Tensor, return_dict: bool = True, generator: torch.Generator | None = None
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Latents ``(batch, latent_channels, h, w)`` to images ``(batch, out_channels, h*f, w*f)``.

        ``generator`` is accepted for diffusers' signature; decoding draws no noise.
        """
        self._check_input(z, "z", self.config.latent_channels)
        if self.use_slicing and z.shape[0] > 1:
            images = torch.cat([self._decode(one) for one in z.split(1)])
        else:
            images = self._decode(z)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def tiled_decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Decode ``z`` in tiles whatever its size (what :meth:`decode` does above the tile size with tiling on)."""
        self._check_input(z, "z", self.config.latent_channels)
        images = self._tiled_images(z)
        return DecoderOutput(sample=images) if return_dict else (images,)

    def forward(
        self,
        sample: torch.Tensor,
        sample_posterior: bool = False,
        return_dict: bool = True,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode ``sample``, take the posterior's mode (or a draw with ``sample_posterior``), decode."""
        posterior = self.encode(sample).latent_dist  # type: ignore[union-attr]
        z = posterior.sample(generator=generator) if sample_posterior else posterior.mode()
        images = self.decode(z).sample  # type: ignore[union-attr]
        return DecoderOutput(sample=images) if return_dict else (images,)

    def _check_input(self, tensor: torch.Tensor, name: str, channels: int) -> None:
        if tensor.ndim != 4 or tensor.shape[1] != channels:
            raise ValueError(
                f"{type(self).__name__}: {name} must have shape (batch, {channels}, height, width); "
                f"got {tuple(tensor.shape)}"
            )

"""Tiny SD and SDXL pipelines from diffkit's own classes (random weights, 32x32 px) for the speed-feature tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffkit import registry
from diffkit.testing import write_clip_tokenizer_files

SD_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
)
XL_WIDTH = 32
SDXL_UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
    cross_attention_dim=2 * XL_WIDTH, transformer_layers_per_block=(1, 2), addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + XL_WIDTH,
)
VAE = dict(
    block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, clip_sample=False,
                 set_alpha_to_one=False)


def _tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder))


def _text_encoder(tokenizer: Any, projection: bool = False, hidden_size: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=hidden_size, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def tiny_sd(folder: Path, scheduler: str = "DDIMScheduler") -> Any:
    """A tiny ``StableDiffusionPipeline`` with a progress bar that stays quiet."""
    from diffkit_pipeline_stable_diffusion import StableDiffusionPipeline

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    pipe = StableDiffusionPipeline(
        vae=registry.get("model", "AutoencoderKL")(**VAE).eval(),
        text_encoder=_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=registry.get("model", "UNet2DConditionModel")(**SD_UNET).eval(),
        scheduler=registry.get("scheduler", scheduler)(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_sdxl(folder: Path, scheduler: str = "EulerDiscreteScheduler") -> Any:
    """A tiny ``StableDiffusionXLPipeline`` (two text encoders, micro-conditioning), watermark off."""
    from diffkit_pipeline_stable_diffusion_xl import StableDiffusionXLPipeline

    torch.manual_seed(0)
    tokenizer = _tokenizer(folder)
    pipe = StableDiffusionXLPipeline(
        vae=registry.get("model", "AutoencoderKL")(**VAE).eval(),
        text_encoder=_text_encoder(tokenizer, hidden_size=XL_WIDTH),
        text_encoder_2=_text_encoder(tokenizer, projection=True, hidden_size=XL_WIDTH),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=registry.get("model", "UNet2DConditionModel")(**SDXL_UNET).eval(),
        scheduler=registry.get("scheduler", scheduler)(**SCHEDULER),
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def swap_scheduler(pipe: Any, name: str) -> None:
    """Give ``pipe`` the scheduler class ``name`` built from its current scheduler's config."""
    pipe.scheduler = registry.get("scheduler", name).from_config(pipe.scheduler.config)

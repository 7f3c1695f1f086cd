"""Tiny random Stable Diffusion checkpoints that diffusers itself builds and saves, for parity tests.

The Hub is unreachable in tests, so the tokenizer comes from ``diffkit.testing``'s offline CLIP
vocabulary and every model is a few channels wide: a call at 32x32 pixels with 2-3 steps takes
milliseconds. Imported by ``tests/parity/test_stable_diffusion_parity.py`` and
``tests/test_thread_safety.py`` (``tests/`` is on ``sys.path`` through ``tests/conftest.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from diffkit.testing import write_clip_tokenizer_files

#: the prompt embedding width: the text encoder's hidden size and the UNet's cross_attention_dim
HIDDEN = 32
#: pixels per latent of the tiny VAE (two blocks)
VAE_FACTOR = 2
SCHEDULER = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "clip_sample": False, "set_alpha_to_one": False, "steps_offset": 1}


def tiny_unet(**overrides: Any) -> Any:
    from diffusers import UNet2DConditionModel

    config = dict(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=HIDDEN, attention_head_dim=4,
    )
    return UNet2DConditionModel(**{**config, **overrides}).eval()


def tiny_vae() -> Any:
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
    ).eval()


def tiny_tokenizer(folder: Path) -> Any:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder))


def tiny_text_encoder(tokenizer: Any, hidden_size: int = HIDDEN) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=3,
        num_attention_heads=4, layer_norm_eps=1e-5, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config).eval()


def tiny_safety_checker(flag_everything: bool) -> tuple[Any, Any]:
    """A random ``StableDiffusionSafetyChecker`` and its ``CLIPImageProcessor`` (32 px).

    diffusers starts the concept thresholds at 1, which no cosine similarity exceeds, so nothing
    is flagged; ``flag_everything`` lowers them below -1 so every image is flagged and blacked out.
    """
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    text = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, vocab_size=100)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=text, vision_config=vision, projection_dim=32)).eval()
    if flag_everything:
        with torch.no_grad():
            checker.concept_embeds_weights.fill_(-2.0)
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return checker, extractor


def build_diffusers_sd(
    folder: Path,
    *,
    safety_checker: str | None = None,
    seed: int = 0,
    unet: dict[str, Any] | None = None,
    pipeline: str = "StableDiffusionPipeline",
) -> Any:
    """Build a tiny diffusers Stable Diffusion pipeline (DDIM), save it to ``folder``, return it.

    ``safety_checker``: ``None`` (none, ``requires_safety_checker=False``), ``"pass"`` (present,
    flags nothing) or ``"flag"`` (present, flags every image). ``unet``: config overrides
    (``in_channels=9`` for inpainting, 8 for InstructPix2Pix). ``pipeline``: the diffusers class
    that builds and saves it (its name is the checkpoint's ``_class_name``).
    """
    import diffusers
    from diffusers import DDIMScheduler

    StableDiffusionPipeline = getattr(diffusers, pipeline)

    torch.manual_seed(seed)
    tokenizer = tiny_tokenizer(Path(folder).parent / f"{Path(folder).name}-tokenizer")
    checker, extractor = (None, None) if safety_checker is None else tiny_safety_checker(safety_checker == "flag")
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=tiny_text_encoder(tokenizer),
        tokenizer=tokenizer,
        unet=tiny_unet(**(unet or {})),
        scheduler=DDIMScheduler(**SCHEDULER),
        safety_checker=checker,
        feature_extractor=extractor,
        requires_safety_checker=safety_checker is not None,
    )
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    return pipe


def as_array(images: Any) -> Any:
    """Images of any ``output_type`` (PIL list, NHWC array, NCHW tensor, latents) as one float64 array."""
    import numpy as np

    if isinstance(images, torch.Tensor):
        return images.detach().cpu().double().numpy()
    if isinstance(images, list):
        return np.stack([np.asarray(image, dtype=np.float64) for image in images])
    return np.asarray(images, dtype=np.float64)

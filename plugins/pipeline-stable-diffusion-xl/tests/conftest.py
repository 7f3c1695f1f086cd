"""A tiny SDXL pipeline built from diffkit's own classes and transformers' CLIP (no diffusers), 32x32 px."""

from __future__ import annotations

import pytest
import torch

WIDTH = 32
UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
    cross_attention_dim=2 * WIDTH, transformer_layers_per_block=(1, 2), addition_embed_type="text_time",
    addition_time_embed_dim=8, projection_class_embeddings_input_dim=6 * 8 + WIDTH,
)
VAE = dict(
    block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def text_encoder(tokenizer, projection: bool, hidden_size: int = WIDTH):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=WIDTH, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


@pytest.fixture(scope="session")
def components(tmp_path_factory):
    """The components of a tiny SDXL base pipeline (Euler), as constructor arguments."""
    pytest.importorskip("transformers")
    from transformers import CLIPTokenizer

    from diffkit import registry
    from diffkit.testing import write_clip_tokenizer_files

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp_path_factory.mktemp("tokenizer")))
    return dict(
        vae=registry.get("model", "AutoencoderKL")(**VAE).eval(),
        text_encoder=text_encoder(tokenizer, projection=False),
        text_encoder_2=text_encoder(tokenizer, projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=registry.get("model", "UNet2DConditionModel")(**UNET).eval(),
        scheduler=registry.get("scheduler", "EulerDiscreteScheduler")(**SCHEDULER),
        add_watermarker=False,
    )


@pytest.fixture
def pipe(components):
    from diffkit_pipeline_stable_diffusion_xl.text_to_image import StableDiffusionXLPipeline

    pipeline = StableDiffusionXLPipeline(**components)
    pipeline.set_progress_bar_config(disable=True)
    return pipeline

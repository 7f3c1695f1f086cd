"""Benchmark: `from_pretrained` of a Stable Diffusion 1.5-sized pipeline, diffkit vs diffusers: time and peak RSS.

diffusers builds the pipeline with random weights and saves it (float32 safetensors, ~4.3 GB;
``pipeline_loading.py`` builds, measures and reports, shared with ``bench_sdxl_loading.py``):
the runwayml/stable-diffusion-v1-5 architecture written out by hand, an 860M-parameter
UNet2DConditionModel, a 123M-parameter CLIPTextModel (ViT-L/14 text tower), an 84M-parameter
AutoencoderKL and a PNDM scheduler, without safety checker. The tokenizer is the small offline
CLIP vocabulary of ``diffkit.testing`` (the Hub is out of reach; the encoder keeps SD's 49408-token
embedding). Each library then loads it in fresh processes, interleaved repeat by repeat, with
the figures of ``bench_loading.py``: import + first load in a fresh process, that plus one full
read of every weight, a second load (and read) in the same process, the peak RSS a load adds
over the process's floor, and the whole process's peak RSS (imports included).

diffusers 0.42.1 loads with ``low_cpu_mem_usage=True`` (meta-device models, no random init)
only when ``accelerate`` is importable, and accelerate is not installed in this virtualenv; so
diffusers runs as installed and, with ``--accelerate DIR`` (a folder holding accelerate and
psutil, e.g. ``pip install --target DIR --no-deps accelerate psutil pyyaml``), once more with
that folder on ``PYTHONPATH``. The reported ratio is against the faster diffusers. diffkit checks
every loaded weight for NaN/Inf (a sum per tensor in its own dtype, which reads all of them);
``--no-weight-check`` adds a diffkit run with that check off (``DIFFKIT_CHECK_WEIGHTS=0``).

Run: python tests/benchmarks/bench_sd_loading.py [--repeats 3] [--accelerate DIR] [--checkpoint DIR]
[--dtype float32|float16] [--tiny]; the checkpoint is written under /tmp and deleted afterwards,
unless ``--checkpoint DIR`` names one to build once and keep.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loading import loading_series  # noqa: E402
from pipeline_loading import add_options, checkpoint, json_figures, loaders_and_envs, report, size_gb  # noqa: E402
from timing import parser, print_ratio, print_setup, write_json  # noqa: E402

#: runwayml/stable-diffusion-v1-5 unet/config.json, as diffusers' arguments
SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
#: its vae/config.json
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=512, scaling_factor=0.18215,
)
#: its text_encoder/config.json (openai/clip-vit-large-patch14's text tower)
SD15_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)
#: its scheduler/scheduler_config.json
SD15_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    set_alpha_to_one=False, skip_prk_steps=True, steps_offset=1,
)
#: the same layout a few channels wide, to check the script
TINY = dict(
    unet=dict(SD15_UNET, sample_size=8, layers_per_block=1, block_out_channels=(8, 8, 16, 16), norm_num_groups=4,
              cross_attention_dim=32, attention_head_dim=2),
    vae=dict(SD15_VAE, layers_per_block=1, block_out_channels=(4, 4, 8, 8), norm_num_groups=2, sample_size=64),
    text=dict(SD15_TEXT, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4, projection_dim=32),
)

def spec(tiny: bool) -> dict:
    """The pipeline that ``pipeline_loading.build`` makes: SD1.5, or its tiny twin."""
    configs = TINY if tiny else dict(unet=SD15_UNET, vae=SD15_VAE, text=SD15_TEXT)
    return dict(
        pipeline="StableDiffusionPipeline", unet=configs["unet"], vae=configs["vae"],
        scheduler=("PNDMScheduler", SD15_SCHEDULER), text_encoders={"text_encoder": ("CLIPTextModel", configs["text"])},
        tokenizers=["tokenizer"], settings=dict(safety_checker=None, feature_extractor=None,
                                                requires_safety_checker=False),
    )


LOADERS = {
    "diffkit": ("from diffkit import DiffusionPipeline", "DiffusionPipeline.from_pretrained(path)"),
    "diffusers": ("from diffusers import StableDiffusionPipeline", "StableDiffusionPipeline.from_pretrained(path)"),
}


def main() -> None:
    p = parser(__doc__, repeats=3, clock="process")
    add_options(p, "float32")
    args = p.parse_args()
    if args.tiny:
        args.repeats = 1
    loaders, envs = loaders_and_envs(args, LOADERS)
    with checkpoint(args, "sd15-random", spec(args.tiny)) as folder:
        gigabytes = size_gb(folder)
        series = loading_series(loaders, folder, args.clock, args.repeats, args.warmup, envs)

    params = series["diffkit"]["params"].median
    print_setup(
        f"StableDiffusionPipeline, SD1.5 layout{' (tiny)' if args.tiny else ''} with random weights saved by "
        f"diffusers: {params / 1e6:.0f}M parameters, {gigabytes:.2f} GB {args.dtype} safetensors; "
        "one fresh process per loader and repeat, checkpoint in the page cache",
        args,
    )
    best, r, unchecked = report(series)
    write_json(args, json_figures(series, {best: r}))
    print_ratio(
        r["cold_read"],
        f"import + first load + read of every weight, fresh process, against {best} (goal <= 0.7)",
        f"process peak RSS {r['process_peak_mb']:.2f}x (goal <= 0.7), import + first load {r['cold']:.2f}x, "
        f"second load + read {r['second_read']:.2f}x, peak RSS added by load + read {r['added_read_mb']:.2f}x"
        f"{unchecked}",
    )


if __name__ == "__main__":
    main()

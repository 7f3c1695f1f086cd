"""Benchmark: `from_pretrained` of an SDXL-sized pipeline in float16, diffkit vs diffusers: time and peak RSS.

diffusers builds the pipeline with random weights and saves it in float16 (~6.9 GB of
safetensors): the stabilityai/stable-diffusion-xl-base-1.0 architecture written out by hand
from its config files, a 2.57B-parameter UNet2DConditionModel (text_time conditioning, 1/2/10
transformer layers per block), CLIP ViT-L/14's text tower (``CLIPTextModel``, 123M), OpenCLIP
ViT-bigG/14's (``CLIPTextModelWithProjection``, 695M), an 84M-parameter AutoencoderKL and an
Euler scheduler. The weights are created directly in float16 (``torch.set_default_dtype``), so
building never holds a float32 copy (~7 GB of memory, not ~17). Both tokenizers are the small
offline CLIP vocabulary of ``diffkit.testing`` (no Hub); the encoders keep the 49408-token
embeddings. ``pipeline_loading.py`` builds, measures and reports, shared with
``bench_sd_loading.py``; each library loads with ``torch_dtype=torch.float16`` in fresh
processes, interleaved, with the figures of ``bench_loading.py`` (import + first load, the same
plus a read of every weight, a second load, peak RSS a load adds, the process's peak RSS).

With a CUDA device, the same runs once more with ``enable_model_cpu_offload()`` after the load
(diffusers needs accelerate for it: give ``--accelerate DIR``); without one, that part prints a
line saying it was skipped. ``--accelerate DIR`` and ``--no-weight-check`` are those of
``bench_sd_loading.py``.

Run: python tests/benchmarks/bench_sdxl_loading.py [--repeats 2] [--accelerate DIR] [--checkpoint DIR]
[--no-weight-check] [--tiny]; the checkpoint is written under /tmp and deleted afterwards, unless
``--checkpoint DIR`` names one to build once and keep. Needs ~7 GB of disk and ~8 GB of memory.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loading import loading_series  # noqa: E402
from pipeline_loading import (  # noqa: E402
    ACCELERATE,
    add_options,
    checkpoint,
    cuda_available,
    json_figures,
    loaders_and_envs,
    report,
    size_gb,
)
from timing import parser, print_ratio, print_setup, write_json  # noqa: E402

#: stabilityai/stable-diffusion-xl-base-1.0 unet/config.json, as diffusers' arguments
SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
    use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816, norm_num_groups=32, norm_eps=1e-5, act_fn="silu",
    center_input_sample=False, downsample_padding=1, flip_sin_to_cos=True, freq_shift=0, mid_block_scale_factor=1,
)
#: its vae/config.json
SDXL_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32,
    act_fn="silu", sample_size=1024, scaling_factor=0.13025, force_upcast=True,
)
#: its text_encoder/config.json (openai/clip-vit-large-patch14's text tower)
CLIP_L = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
)
#: its text_encoder_2/config.json (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k's text tower)
OPENCLIP_BIGG = dict(
    vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
    max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, projection_dim=1280,
)
#: its scheduler/scheduler_config.json
SDXL_SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    prediction_type="epsilon", interpolation_type="linear", use_karras_sigmas=False, steps_offset=1,
    timestep_spacing="leading",
)
#: the same layout a few channels wide, to check the script
TINY = dict(
    unet=dict(SDXL_UNET, sample_size=8, layers_per_block=1, block_out_channels=(8, 16, 16), norm_num_groups=4,
              transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 4, 4), cross_attention_dim=64,
              addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8),
    vae=dict(SDXL_VAE, layers_per_block=1, block_out_channels=(4, 4, 8, 8), norm_num_groups=2, sample_size=64),
    text=dict(CLIP_L, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
              num_attention_heads=4, projection_dim=32),
    text_2=dict(OPENCLIP_BIGG, vocab_size=1000, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=4, projection_dim=32),
)


def spec(tiny: bool) -> dict:
    """The pipeline that ``pipeline_loading.build`` makes: SDXL base, or its tiny twin."""
    configs = TINY if tiny else dict(unet=SDXL_UNET, vae=SDXL_VAE, text=CLIP_L, text_2=OPENCLIP_BIGG)
    return dict(
        pipeline="StableDiffusionXLPipeline", unet=configs["unet"], vae=configs["vae"],
        scheduler=("EulerDiscreteScheduler", SDXL_SCHEDULER),
        text_encoders={"text_encoder": ("CLIPTextModel", configs["text"]),
                       "text_encoder_2": ("CLIPTextModelWithProjection", configs["text_2"])},
        tokenizers=["tokenizer", "tokenizer_2"], settings=dict(force_zeros_for_empty_prompt=True,
                                                               add_watermarker=False),
    )


LOAD_OPTIONS = "torch_dtype=torch.float16, add_watermarker=False"
LOADERS = {
    "diffkit": ("from diffkit import DiffusionPipeline", f"DiffusionPipeline.from_pretrained(path, {LOAD_OPTIONS})"),
    "diffusers": ("from diffusers import StableDiffusionXLPipeline",
                  f"StableDiffusionXLPipeline.from_pretrained(path, {LOAD_OPTIONS})"),
}


def with_offload(load_expression: str) -> str:
    """The load expression followed by ``enable_model_cpu_offload()`` on the pipeline it returns."""
    return f"(lambda pipe: pipe.enable_model_cpu_offload() or pipe)({load_expression})"


def main() -> None:
    p = parser(__doc__, repeats=2, clock="process")
    add_options(p, "float16")
    args = p.parse_args()
    if args.tiny:
        args.repeats = 1
    loaders, envs = loaders_and_envs(args, LOADERS)
    offload = cuda_available()
    with checkpoint(args, "sdxl-base-random", spec(args.tiny)) as folder:
        gigabytes = size_gb(folder)
        series = loading_series(loaders, folder, args.clock, args.repeats, args.warmup, envs)
        offload_series = None
        if offload and args.accelerate:
            offload_loaders = {
                "diffkit": (LOADERS["diffkit"][0], with_offload(LOADERS["diffkit"][1])),
                ACCELERATE: (LOADERS["diffusers"][0], with_offload(LOADERS["diffusers"][1])),
            }
            offload_series = loading_series(offload_loaders, folder, args.clock, args.repeats, args.warmup, envs)

    params = series["diffkit"]["params"].median
    print_setup(
        f"StableDiffusionXLPipeline, SDXL-base layout{' (tiny)' if args.tiny else ''} with random weights saved by "
        f"diffusers: {params / 1e9:.2f}B parameters, {gigabytes:.2f} GB {args.dtype} safetensors, loaded with "
        f"{LOAD_OPTIONS}; one fresh process per loader and repeat, checkpoint in the page cache",
        args,
    )
    best, r, unchecked = report(series)
    ratios = {best: r}
    offload_note = "model CPU offload not measured: no CUDA device" if not offload else (
        "model CPU offload not measured: diffusers needs accelerate for it, give --accelerate DIR")
    if offload_series is not None:
        print("with enable_model_cpu_offload() after the load:")
        _, o, _ = report(offload_series, unchecked=None)
        ratios["offload"] = o
        offload_note = (f"with model CPU offload: import + first load + read {o['cold_read']:.2f}x, "
                        f"process peak RSS {o['process_peak_mb']:.2f}x")
    else:
        print(f"skipped: {offload_note}")
    write_json(args, json_figures(series, ratios))
    print_ratio(
        r["cold_read"],
        f"import + first load + read of every weight, fresh process, against {best} (goal <= 0.7)",
        f"process peak RSS {r['process_peak_mb']:.2f}x (goal <= 0.7), import + first load {r['cold']:.2f}x, "
        f"second load + read {r['second_read']:.2f}x, peak RSS added by load + read {r['added_read_mb']:.2f}x"
        f"{unchecked}; {offload_note}",
    )


if __name__ == "__main__":
    main()

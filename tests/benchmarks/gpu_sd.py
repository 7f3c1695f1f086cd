"""Stable Diffusion 1.5 and SDXL on a CUDA GPU: diffusers vs diffkit, eager and compiled, and DeepCache.

Builds SD1.5- and SDXL-config UNets, VAEs and CLIP text encoders with random weights (no
downloads) in float16; diffkit's UNet and VAE hold the very tensors of diffusers' (same
weights, loaded once). For each config it measures, in this order on the same GPU:

- diffusers eager, diffkit eager;
- diffusers compiled (``fuse_qkv_projections``, channels-last, ``torch.compile`` of the whole
  UNet with ``fullgraph=True``, or ``--diffusers-compile regional``: diffusers'
  ``compile_repeated_blocks``), diffkit compiled (``fuse_qkv_projections``, channels-last,
  ``unet.compile()``: regional, one graph per block shape);
- diffkit compiled + DeepCache (``enable_step_cache("deepcache", interval=3)``);
- diffkit's UNet compiled as one graph with ``mode="reduce-overhead"`` (inductor replays it as
  CUDA graphs: static shapes, no launch overhead), for the configs ``--cuda-graphs`` names
  (default sd15: the whole-graph compile of the SDXL UNet takes minutes).

Figures: UNet ms per classifier-free-guidance step (batch 2, 64x64 latents for SD1.5, 128x128
for SDXL; DeepCache's is the mean over whole cache cycles), the end-to-end time of one
30-step 512²/1024² image (text encoding, 30 UNet steps, VAE decode; wall clock with the GPU
synchronised), peak GPU memory of that call, the warm-up of the first compiled UNet call,
and each time as a ratio to diffusers eager. Only the UNets are compiled, on both sides.

    python tests/benchmarks/gpu_sd.py                  # CUDA GPU, float16, about 5-8 minutes
    python tests/benchmarks/gpu_sd.py --configs sd15   # one config
    python tests/benchmarks/gpu_sd.py --smoke          # every path with tiny configs, on the CPU

``--smoke`` checks the script, not speed: tiny models, float32, 2 steps, dynamo's ``eager``
backend unless ``--backend`` says otherwise.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import timing  # noqa: E402

PROMPT = "a photograph of an astronaut riding a horse"
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, projection_dim=768)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
              projection_dim=1280, hidden_act="gelu")
SD_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
)

CONFIGS: dict[str, dict[str, Any]] = {
    "sd15": dict(
        pipeline="StableDiffusionPipeline", size=512,
        unet=dict(sample_size=64, cross_attention_dim=768, attention_head_dim=8),
        vae=SD_VAE, text_encoders=[CLIP_L],
    ),
    "sdxl": dict(
        pipeline="StableDiffusionXLPipeline", size=1024,
        unet=dict(
            sample_size=128, block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048,
            use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        ),
        vae=dict(SD_VAE, sample_size=1024, scaling_factor=0.13025),
        text_encoders=[CLIP_L, CLIP_G],
    ),
}
TINY_VAE = dict(
    block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, sample_size=32,
)
TINY_CLIP = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, projection_dim=32)
TINY: dict[str, dict[str, Any]] = {
    "sd15": dict(
        pipeline="StableDiffusionPipeline", size=32,
        unet=dict(
            sample_size=16, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, attention_head_dim=4,
        ),
        vae=TINY_VAE, text_encoders=[TINY_CLIP],
    ),
    "sdxl": dict(
        pipeline="StableDiffusionXLPipeline", size=32,
        unet=dict(
            sample_size=16, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, cross_attention_dim=64, transformer_layers_per_block=(1, 2),
            addition_embed_type="text_time", addition_time_embed_dim=8, projection_class_embeddings_input_dim=80,
        ),
        vae=TINY_VAE, text_encoders=[TINY_CLIP, TINY_CLIP],
    ),
}
VARIANTS = ("diffusers eager", "diffkit eager", "diffusers compiled", "diffkit compiled", "diffkit compiled+DeepCache",
            "diffkit whole graph+CUDA graphs")


@dataclass
class Row:
    """The figures of one variant of one config."""

    config: str
    variant: str
    unet_ms: float | None = None
    image_s: float | None = None
    peak_gib: float | None = None
    warmup_s: float | None = None
    finite: bool | None = None
    extra: dict[str, float] = field(default_factory=dict)


# -- building ---------------------------------------------------------------------------------


def _text_encoders(specs: list[dict[str, Any]], tokenizer: Any, device: str, dtype: Any) -> list[Any]:
    """CLIP text encoders with random weights; in an SDXL pair the second one has a projection."""
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    encoders = []
    for i, spec in enumerate(specs):
        config = CLIPTextConfig(
            vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, **spec,
        )
        cls = CLIPTextModelWithProjection if len(specs) == 2 and i == 1 else CLIPTextModel
        with torch.device(device):
            encoders.append(cls(config).to(dtype).eval())
    return encoders


def _twin(diffusers_model: Any, name: str, config: dict[str, Any]) -> Any:
    """diffkit's model of the same class and config holding ``diffusers_model``'s tensors (no copy)."""
    import torch

    from diffkit import registry

    with torch.device("meta"):
        ours = registry.get("model", name)(**config)
    ours.load_state_dict(diffusers_model.state_dict(), assign=True)
    leftover = [n for n, t in (*ours.named_parameters(), *ours.named_buffers()) if t.is_meta]
    if leftover:
        raise RuntimeError(f"diffkit {name} got no tensor for {leftover[:5]}")
    return ours.eval()


def build(spec: dict[str, Any], device: str, dtype: Any, folder: Path) -> dict[str, Any]:
    """Both pipelines of one config, sharing text encoders, tokenizers and weights."""
    import diffusers
    import torch
    from transformers import CLIPTokenizer

    from diffkit import registry
    from diffkit.testing import write_clip_tokenizer_files

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder / "tokenizer"))
    encoders = _text_encoders(spec["text_encoders"], tokenizer, device, dtype)
    with torch.device(device):
        their_unet = diffusers.UNet2DConditionModel(**spec["unet"]).to(dtype).eval()
        their_vae = diffusers.AutoencoderKL(**spec["vae"]).to(dtype).eval()
    our_unet = _twin(their_unet, "UNet2DConditionModel", spec["unet"])
    our_vae = _twin(their_vae, "AutoencoderKL", spec["vae"])
    xl = spec["pipeline"] == "StableDiffusionXLPipeline"

    def parts(unet: Any, vae: Any, scheduler: Any) -> dict[str, Any]:
        common = dict(vae=vae, unet=unet, scheduler=scheduler, text_encoder=encoders[0], tokenizer=tokenizer)
        if xl:
            return dict(common, text_encoder_2=encoders[1], tokenizer_2=tokenizer, add_watermarker=False)
        return dict(common, safety_checker=None, feature_extractor=None, requires_safety_checker=False)

    theirs = getattr(diffusers, spec["pipeline"])(
        **parts(their_unet, their_vae, diffusers.EulerDiscreteScheduler(**SCHEDULER))
    )
    ours = registry.get("pipeline", spec["pipeline"])(
        **parts(our_unet, our_vae, registry.get("scheduler", "EulerDiscreteScheduler")(**SCHEDULER))
    )
    for pipe in (theirs, ours):
        pipe.set_progress_bar_config(disable=True)
    return {"diffusers": theirs, "diffkit": ours, "xl": xl}


# -- measuring --------------------------------------------------------------------------------


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def unet_inputs(pipe: Any, spec: dict[str, Any], device: str, dtype: Any, xl: bool) -> dict[str, Any]:
    """One classifier-free-guidance step's UNet arguments: batch 2, the config's latent size, 77 text tokens."""
    import torch

    g = torch.Generator().manual_seed(0)
    size = spec["unet"].get("sample_size", 64)
    channels = spec["unet"].get("in_channels", 4)
    width = spec["unet"]["cross_attention_dim"]
    args: dict[str, Any] = {
        "sample": torch.randn(2, channels, size, size, generator=g).to(device, dtype),
        "timestep": torch.tensor(500.0, device=device),
        "encoder_hidden_states": torch.randn(2, 77, width, generator=g).to(device, dtype),
    }
    if xl:
        pooled = spec["text_encoders"][1]["projection_dim"]
        args["added_cond_kwargs"] = {
            "text_embeds": torch.randn(2, pooled, generator=g).to(device, dtype),
            "time_ids": torch.tensor([[spec["size"], spec["size"], 0, 0, spec["size"], spec["size"]]] * 2,
                                     device=device, dtype=dtype),
        }
    return args


def unet_step(pipe: Any, inputs: dict[str, Any], device: str, calls: int = 1) -> Callable[[], None]:
    """``calls`` UNet forwards inside one pipeline-call scope (DeepCache's state lives there), then a sync.

    Each library's UNet runs under the grad mode its pipelines use (diffkit: inference mode,
    diffusers: no_grad), so the compiled graphs measured are those the image calls reuse.
    """
    import torch

    from diffkit.pipeline import Pipeline
    from diffkit.step_cache import call_scope

    cache = getattr(pipe, "step_cache", None)
    grad_mode = torch.inference_mode if isinstance(pipe, Pipeline) else torch.no_grad

    def run() -> None:
        with grad_mode(), call_scope(cache) if cache is not None else contextlib.nullcontext():
            for _ in range(calls):
                pipe.unet(**inputs, return_dict=False)
        _sync(device)

    return run


def image_call(pipe: Any, spec: dict[str, Any], steps: int, device: str) -> Callable[[], Any]:
    import torch

    def run() -> Any:
        out = pipe(PROMPT, num_inference_steps=steps, height=spec["size"], width=spec["size"], output_type="np",
                   generator=torch.Generator(device).manual_seed(0)).images
        _sync(device)
        return out

    return run


def measure_pair(pair: dict[str, Callable[[], Any]], repeats: int, warmup: int) -> dict[str, timing.Figure]:
    """Wall-clock seconds of each case, interleaved repeat by repeat."""
    series = timing.interleave({k: timing.timed(f, "wall") for k, f in pair.items()}, repeats, warmup)
    return {k: s["seconds"] for k, s in series.items()}


def peak_memory(run: Callable[[], Any], device: str) -> tuple[float | None, bool]:
    """Peak GPU memory (GiB) of one ``run()`` and whether its images were finite."""
    import numpy as np
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    images = run()
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    return peak, bool(np.isfinite(images).all())


def compile_both(env: dict[str, Any], args: Any) -> None:
    """Apply each library's compiled setup to its UNet (fused QKV, channels-last, torch.compile)."""
    import torch

    theirs, ours = env["diffusers"], env["diffkit"]
    for pipe in (theirs, ours):
        pipe.unet.fuse_qkv_projections()
        if args.channels_last:
            pipe.unet.to(memory_format=torch.channels_last)
    settings = dict(fullgraph=True, backend=args.backend)
    if args.mode:
        settings["mode"] = args.mode
    if args.diffusers_compile == "regional":
        theirs.unet.compile_repeated_blocks(**settings)
    else:
        theirs.unet.compile(**settings)
    ours.unet.compile(**settings)


def whole_graph_pipeline(ours: Any, args: Any) -> Any:
    """A sibling of ``ours`` whose UNet (same tensors, fused QKV) is compiled as one graph, with
    ``mode="reduce-overhead"`` (inductor's CUDA graphs) when the backend is inductor."""
    import torch

    unet = ours.unet
    with torch.device("meta"):
        twin = type(unet)(unet.config)
    twin.load_state_dict(unet.state_dict(), assign=True)
    twin.eval().fuse_qkv_projections()
    mode = "reduce-overhead" if args.backend == "inductor" else None
    twin.compile(mode, regional=False, backend=args.backend)
    pipe = type(ours)(**{**ours.components, "unet": twin}, **ours.settings)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_config(name: str, spec: dict[str, Any], args: Any, device: str, dtype: Any) -> list[Row]:
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        env = build(spec, device, dtype, Path(tmp))
    theirs, ours = env["diffusers"], env["diffkit"]
    inputs = unet_inputs(ours, spec, device, dtype, env["xl"])
    rows = {v: Row(name, v) for v in VARIANTS}

    def unet_figures(pair: dict[str, Any], calls: int = 1) -> dict[str, float]:
        cases = {label: unet_step(pipe, inputs, device, calls) for label, pipe in pair.items()}
        figures = measure_pair(cases, args.repeats, warmup=1)
        return {label: f.median * 1000 / calls for label, f in figures.items()}

    def image_figures(pair: dict[str, Any]) -> None:
        cases = {label: image_call(pipe, spec, args.steps, device) for label, pipe in pair.items()}
        for label, figure in measure_pair(cases, args.image_repeats, warmup=1).items():
            rows[label].image_s = figure.median
        for label, case in cases.items():
            rows[label].peak_gib, rows[label].finite = peak_memory(case, device)

    # eager
    eager = {"diffusers eager": theirs, "diffkit eager": ours}
    for label, ms in unet_figures(eager, args.unet_calls).items():
        rows[label].unet_ms = ms
    image_figures(eager)

    # compiled: the first UNet call of each side is its warm-up (compilation)
    compile_both(env, args)
    compiled = {"diffusers compiled": theirs, "diffkit compiled": ours}
    for label, pipe in compiled.items():
        start = time.perf_counter()
        unet_step(pipe, inputs, device)()
        rows[label].warmup_s = time.perf_counter() - start
    for label, ms in unet_figures(compiled, args.unet_calls).items():
        rows[label].unet_ms = ms
    image_figures(compiled)

    # diffkit compiled + DeepCache: per-step time over whole cache cycles
    ours.enable_step_cache("deepcache", interval=args.deepcache_interval)
    label = "diffkit compiled+DeepCache"
    cycle = args.deepcache_interval * max(1, args.unet_calls // args.deepcache_interval)
    rows[label].unet_ms = unet_figures({label: ours}, cycle)[label]
    image_figures({label: ours})
    ours.disable_step_cache()

    # diffkit's UNet compiled as one graph, replayed as CUDA graphs (static shapes)
    label = "diffkit whole graph+CUDA graphs"
    if name in args.cuda_graphs.split(","):
        whole = whole_graph_pipeline(ours, args)
        start = time.perf_counter()
        unet_step(whole, inputs, device)()
        rows[label].warmup_s = time.perf_counter() - start
        rows[label].unet_ms = unet_figures({label: whole}, args.unet_calls)[label]
        image_figures({label: whole})
        del whole

    del env, theirs, ours
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return [rows[v] for v in VARIANTS]


# -- output -----------------------------------------------------------------------------------


def _ratio(value: float | None, base: float | None) -> str:
    return f"{base / value:.2f}x" if value and base else "-"


def print_table(rows: list[Row]) -> None:
    """One line per config and variant; a speed-up is diffusers eager's time over the variant's (higher is faster)."""
    header = (f"{'config':<6} {'variant':<32} {'UNet ms/step':>13} {'speed-up':>9} {'image s':>9} {'speed-up':>9} "
              f"{'peak GiB':>9} {'warm-up s':>10} finite")
    print(header)
    print("-" * len(header))
    for row in rows:
        base = next(r for r in rows if r.config == row.config and r.variant == "diffusers eager")
        ms = f"{row.unet_ms:.2f}" if row.unet_ms is not None else "-"
        image = f"{row.image_s:.3f}" if row.image_s is not None else "-"
        peak = f"{row.peak_gib:.2f}" if row.peak_gib is not None else "-"
        warm = f"{row.warmup_s:.1f}" if row.warmup_s is not None else "-"
        print(f"{row.config:<6} {row.variant:<32} {ms:>13} {_ratio(row.unet_ms, base.unet_ms):>9} {image:>9} "
              f"{_ratio(row.image_s, base.image_s):>9} {peak:>9} {warm:>10} {row.finite}")


def main() -> None:
    p = timing.parser(__doc__, repeats=5, warmup=1, clock="wall")
    p.add_argument("--smoke", action="store_true", help="tiny configs on the CPU: checks every path, not speed")
    p.add_argument("--configs", default="sd15,sdxl", help="comma-separated: sd15, sdxl (default both)")
    p.add_argument("--steps", type=int, default=30, help="denoising steps of the end-to-end image (default 30)")
    p.add_argument("--unet-calls", type=int, default=12, help="UNet calls per timed repeat (default 12)")
    p.add_argument("--image-repeats", type=int, default=2, help="timed end-to-end images per variant (default 2)")
    p.add_argument("--backend", default=None, help="torch.compile backend (default inductor; eager with --smoke)")
    p.add_argument("--mode", default=None, help="torch.compile mode (e.g. max-autotune-no-cudagraphs)")
    p.add_argument("--diffusers-compile", choices=("full", "regional"), default="full",
                   help="diffusers' UNet: torch.compile of the whole model or compile_repeated_blocks")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="keep the compiled UNets in contiguous (NCHW) memory format")
    p.add_argument("--deepcache-interval", type=int, default=3, help="DeepCache: UNet calls per full call")
    p.add_argument("--cuda-graphs", default="sd15",
                   help="configs that also get diffkit's whole-graph UNet with CUDA graphs (default sd15; '' for none)")
    args = p.parse_args()

    import torch

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"--configs: unknown {unknown}; choose from {sorted(CONFIGS)}")
    if args.smoke or args.tiny:
        device, dtype, specs = "cpu", torch.float32, TINY
        args.steps, args.repeats, args.image_repeats, args.unet_calls = 2, 1, 1, 3
        args.backend = args.backend or "eager"
        torch.set_num_threads(1)
    else:
        if not torch.cuda.is_available():
            print("gpu_sd.py needs a CUDA GPU (none is visible here); --smoke checks the script on the CPU")
            timing.print_ratio(None, "SD1.5 step, not measured: no CUDA GPU")
            sys.exit(2)
        device, dtype, specs = "cuda", torch.float16, CONFIGS
        args.backend = args.backend or "inductor"
    gpu = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke: not a speed measurement)"
    timing.print_setup(f"SD1.5/SDXL UNet step and {args.steps}-step image, {dtype} on {gpu}; "
                       f"compile backend {args.backend}", args)

    rows: list[Row] = []
    for name in configs:
        start = time.perf_counter()
        rows += run_config(name, specs[name], args, device, dtype)
        print(f"  {name}: measured in {time.perf_counter() - start:.0f} s", flush=True)
    print_table(rows)
    timing.write_json(args, {f"{r.config}/{r.variant}/{k}": v for r in rows
                             for k, v in (("unet_ms", r.unet_ms), ("image_s", r.image_s), ("peak_gib", r.peak_gib),
                                          ("warmup_s", r.warmup_s)) if v is not None})

    def speedup(config: str, variant: str, field_name: str) -> float | None:
        pick = {r.variant: getattr(r, field_name) for r in rows if r.config == config}
        ours, base = pick.get(variant), pick.get("diffusers eager")
        return ours / base if ours and base else None

    main_config = configs[0]
    extra = ", ".join(
        f"{c} {v}: {speedup(c, v, 'unet_ms'):.2f}x" for c in configs
        for v in ("diffkit compiled+DeepCache",) if speedup(c, v, "unet_ms")
    )
    timing.print_ratio(speedup(main_config, "diffkit compiled", "unet_ms"),
                       f"{main_config} UNet step time, diffkit compiled / diffusers eager (medians)", extra)


if __name__ == "__main__":
    main()

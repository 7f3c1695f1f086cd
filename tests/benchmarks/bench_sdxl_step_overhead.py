"""Benchmark: per-step overhead of StableDiffusionXLPipeline beyond its UNet, diffkit vs diffusers.

Both libraries load the same tiny SDXL checkpoint saved by diffusers
(``tests/parity/test_stable_diffusion_xl_parity.py``: two CLIP text encoders, a text_time
UNet2DConditionModel, AutoencoderKL, Euler) and run one torch thread, 32x32 px, guidance on. Beyond
the SD step (scheduler step, guidance arithmetic, latent concatenation, progress bar), an SDXL step
hands the UNet the pooled text embeddings and time ids (``added_cond_kwargs``). The measure is the
SD benchmark's (``bench_sd_step_overhead.marginal_measure``): per step is the marginal cost between
a ``--steps`` call and one with a fifth of them, UNet forwards taken off; ``no-op UNet`` (reported)
replaces the UNet's forward by a cached output, ``tiny UNet`` subtracts the real forward's time.

Run: python tests/benchmarks/bench_sdxl_step_overhead.py [--steps 50] [--repeats 7] [--guidance 5] [--tiny]
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "parity"))
from bench_pipeline_overhead import no_op_forward  # noqa: E402
from bench_sd_step_overhead import LIBRARIES, marginal_measure  # noqa: E402
from timing import interleave, parser, print_ratio, print_setup, ratio, set_torch_threads, write_json  # noqa: E402


def main() -> None:
    p = parser(__doc__, repeats=7)
    p.add_argument("--steps", type=int, default=50, help="steps of the long call (default 50)")
    p.add_argument("--guidance", type=float, default=5.0, help="guidance scale (default 5: CFG on)")
    args = p.parse_args()
    if args.tiny:
        args.steps, args.repeats = 5, 1
    set_torch_threads(args.clock, 1)

    import diffusers
    import torch
    from test_stable_diffusion_xl_parity import build_diffusers_sdxl

    from diffkit import DiffusionPipeline

    diffusers.utils.logging.set_verbosity_error()
    pipes = {}
    with tempfile.TemporaryDirectory() as tmp:
        with contextlib.redirect_stderr(io.StringIO()):
            build_diffusers_sdxl(Path(tmp) / "tiny-sdxl")
        for variant in ("no-op UNet", "tiny UNet"):
            for lib, cls in zip(LIBRARIES, (DiffusionPipeline, diffusers.StableDiffusionXLPipeline), strict=True):
                with contextlib.redirect_stderr(io.StringIO()):  # loading progress bars and notices
                    pipe = cls.from_pretrained(Path(tmp) / "tiny-sdxl", add_watermarker=False)
                pipe.set_progress_bar_config(disable=True)
                if variant == "no-op UNet":
                    no_op_forward(pipe.unet)
                pipes[variant, lib] = pipe
    torch.manual_seed(0)

    print_setup(
        f"StableDiffusionXLPipeline, tiny SDXL checkpoint, 32x32 px, guidance {args.guidance}, Euler, "
        f"{args.steps} vs {max(1, args.steps // 5)} steps, 1 torch thread: microseconds",
        args,
    )
    figures: dict = {}
    for variant in ("tiny UNet", "no-op UNet"):
        series = interleave(
            {lib: marginal_measure(pipes[variant, lib], args.steps, args.guidance, args.clock, variant == "tiny UNet")
             for lib in LIBRARIES},
            args.repeats,
            warmup=max(1, args.warmup),
        )
        for lib, s in series.items():
            print(f"{variant:11s} {lib:10s} per step {s['per_step_us'].text(digits=1)}   "
                  f"once per call {s['per_call_us'].text(digits=0)}")
            figures[f"{variant} {lib} per step"] = s["per_step_us"]
            figures[f"{variant} {lib} per call"] = s["per_call_us"]
        figures[f"{variant} ratio"] = ratio(series["diffkit"]["per_step_us"], series["diffusers"]["per_step_us"])
        figures[f"{variant} per-call ratio"] = ratio(series["diffkit"]["per_call_us"], series["diffusers"]["per_call_us"])
    write_json(args, figures)
    print_ratio(
        figures["no-op UNet ratio"], "per-step overhead beyond the UNet, no-op UNet (goal <= 0.5)",
        f"tiny UNet with its forward subtracted {figures['tiny UNet ratio']:.2f}x; "
        f"once-per-call cost {figures['no-op UNet per-call ratio']:.2f}x",
    )


if __name__ == "__main__":
    main()

"""Benchmark: per-step overhead of StableDiffusionPipeline beyond its UNet, diffkit vs diffusers.

Both libraries load the same tiny SD checkpoint saved by diffusers (``tests/parity/sd_checkpoints.py``:
CLIP text encoder, UNet2DConditionModel, AutoencoderKL a few channels wide, DDIM) and run one torch
thread, 32x32 px, classifier-free guidance on (one batched UNet call of 2 per step) unless
``--guidance 1``. What a step costs beyond the UNet is the scheduler step, the guidance arithmetic,
the latent concatenation, the progress bar and the call's bookkeeping. Two measurements, each
interleaved repeat by repeat on the calling thread's CPU time (``--clock wall`` for wall time):

- ``no-op UNet`` (reported): the UNet's forward returns, per input shape, a ready-made output of
  one real forward, so the model costs only its ``Module.__call__`` dispatch;
- ``tiny UNet``: the real UNet runs, its forward timed inside the call and subtracted.

Per step is marginal: each repeat calls the pipeline with ``--steps`` and with a fifth of them,
and divides the difference of the two calls by the difference of the steps, so that what a call
pays once (prompt encoding, VAE decode, post-processing) drops out; that once-per-call cost is
shown beside it.

Run: python tests/benchmarks/bench_sd_step_overhead.py [--steps 50] [--repeats 7] [--guidance 7.5] [--tiny]
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "parity"))
from bench_pipeline_overhead import no_op_forward  # noqa: E402
from timing import (  # noqa: E402
    CLOCKS,
    Record,
    interleave,
    parser,
    print_ratio,
    print_setup,
    ratio,
    set_torch_threads,
    write_json,
)

PROMPT = "a photo of a cat"
LIBRARIES = ("diffkit", "diffusers")


def marginal_measure(pipe, steps: int, guidance: float, clock: str, subtract_model: bool) -> Callable[[], Record]:
    """A measure of microseconds per step (marginal, UNet forwards taken off) and per call (once-per-call cost)."""
    import torch

    read = CLOCKS[clock]
    inside = [0.0]
    if subtract_model:
        original = pipe.unet.forward

        def forward(*args, **kwargs):
            t0 = read()
            out = original(*args, **kwargs)
            inside[0] += read() - t0
            return out

        pipe.unet.forward = forward

    def call(n: int) -> float:
        inside[0] = 0.0
        t0 = read()
        pipe(PROMPT, num_inference_steps=n, guidance_scale=guidance, height=32, width=32, output_type="np",
             generator=torch.Generator().manual_seed(0))
        return read() - t0 - inside[0]

    few = max(1, steps // 5)

    def measure() -> Record:
        long, short = call(steps), call(few)
        per_step = (long - short) / (steps - few)
        return {"per_step_us": per_step * 1e6, "per_call_us": (short - few * per_step) * 1e6}

    return measure


def main() -> None:
    p = parser(__doc__, repeats=7)
    p.add_argument("--steps", type=int, default=50, help="steps of the long call (default 50)")
    p.add_argument("--guidance", type=float, default=7.5, help="guidance scale (default 7.5: CFG on)")
    args = p.parse_args()
    if args.tiny:
        args.steps, args.repeats = 5, 1
    set_torch_threads(args.clock, 1)

    import diffusers
    import torch
    from sd_checkpoints import build_diffusers_sd

    from diffkit import DiffusionPipeline

    diffusers.utils.logging.set_verbosity_error()
    pipes = {}
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        build_diffusers_sd(Path(tmp) / "tiny-sd")
        for variant in ("no-op UNet", "tiny UNet"):
            for lib, cls in zip(LIBRARIES, (DiffusionPipeline, diffusers.StableDiffusionPipeline), strict=True):
                with contextlib.redirect_stderr(io.StringIO()):  # loading progress bars and notices
                    pipe = cls.from_pretrained(Path(tmp) / "tiny-sd")
                pipe.set_progress_bar_config(disable=True)
                if variant == "no-op UNet":
                    no_op_forward(pipe.unet)
                pipes[variant, lib] = pipe

    print_setup(
        f"StableDiffusionPipeline, tiny SD checkpoint, 32x32 px, guidance {args.guidance}, DDIM, "
        f"{args.steps} vs {max(1, args.steps // 5)} steps, 1 torch thread: microseconds",
        args,
    )
    figures: dict = {}
    for variant in ("tiny UNet", "no-op UNet"):
        series = interleave(
            {lib: marginal_measure(pipes[variant, lib], args.steps, args.guidance, args.clock, variant == "tiny UNet")
             for lib in LIBRARIES},
            args.repeats,
            warmup=max(1, args.warmup),  # the no-op UNet's real forwards happen here
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

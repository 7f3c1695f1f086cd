"""Benchmark: per-step overhead of DDPMPipeline (what the pipeline adds around its UNet), diffkit vs diffusers.

Both pipelines load the same tiny checkpoint saved by diffusers and run one torch thread. Two
measurements, each interleaved repeat by repeat (diffkit, diffusers, diffusers, diffkit, ...)
on the calling thread's CPU time (``--clock wall`` for wall time):

- ``no-op UNet``: the UNet's ``forward`` returns a ready-made output of the right type and
  shape at once, so a pipeline call costs exactly its overhead (the scheduler step, noise,
  bookkeeping, the progress bar, ``Module.__call__`` dispatch, post-processing) divided by the
  steps. This is the reported ratio.
- ``tiny UNet``: the real tiny UNet runs; its forward is timed inside the call on the same
  clock and subtracted. Kept to show that the two agree; its difference of two large numbers
  is noisier.

Run: python tests/benchmarks/bench_pipeline_overhead.py [--steps 100] [--repeats 7] [--clock cpu|wall] [--tiny]
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
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

TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
)


def no_op_forward(model) -> None:
    """Make ``model.forward`` return at once: per input shape (and ``return_dict``), the output of one real forward.

    The first call of each shape runs the real forward (a warm-up call does it); later calls return
    that same output object, so the model costs nothing but the ``Module.__call__`` dispatch.
    """
    import torch

    original = model.forward
    ready: dict = {}

    def forward(sample, *args, **kwargs):
        key = (tuple(sample.shape), kwargs.get("return_dict", True))
        if key not in ready:
            with torch.inference_mode():
                ready[key] = original(sample, *args, **kwargs)
        return ready[key]

    model.forward = forward


def overhead_measure(pipe, steps: int, clock: str, subtract_model: bool) -> Callable[[], Record]:
    """A measure of one pipeline call: microseconds per step of the call minus its UNet forwards."""
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

    def measure() -> Record:
        inside[0] = 0.0
        t0 = read()
        pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="np")
        total = read() - t0
        return {"overhead_us": (total - inside[0]) / steps * 1e6, "model_us": inside[0] / steps * 1e6}

    return measure


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=7)
    p.add_argument("--steps", type=int, default=100, help="inference steps per pipeline call (default 100)")
    args = p.parse_args(argv)
    if args.tiny:
        args.steps, args.repeats = 3, 2
    set_torch_threads(args.clock, 1)

    import diffusers
    import torch

    from diffkit import DiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        diffusers.DDPMPipeline(unet=diffusers.UNet2DModel(**TINY_UNET), scheduler=diffusers.DDPMScheduler()
                               ).save_pretrained(Path(tmp) / "ckpt")
        pipes = {}
        for variant in ("no-op UNet", "tiny UNet"):
            for lib, cls in (("diffkit", DiffusionPipeline), ("diffusers", diffusers.DDPMPipeline)):
                with contextlib.redirect_stderr(io.StringIO()):  # loading progress bars and notices
                    pipe = cls.from_pretrained(Path(tmp) / "ckpt")
                pipe.set_progress_bar_config(disable=True)
                if variant == "no-op UNet":
                    no_op_forward(pipe.unet)
                pipes[variant, lib] = pipe

    print_setup(f"DDPMPipeline, {args.steps} steps per call, 1 torch thread: microseconds per step", args)
    figures: dict = {}
    for variant in ("tiny UNet", "no-op UNet"):
        real = variant == "tiny UNet"
        series = interleave(
            {lib: overhead_measure(pipes[variant, lib], args.steps, args.clock, real) for lib in ("diffkit", "diffusers")},
            args.repeats,
            warmup=max(1, args.warmup),  # the no-op UNet's real forwards happen here
        )
        for lib, s in series.items():
            model = f"   UNet forward {s['model_us'].text(digits=1)}" if real else ""
            print(f"{variant:11s} {lib:10s} overhead {s['overhead_us'].text(digits=1)}{model}")
            figures[f"{variant} {lib}"] = s["overhead_us"]
        figures[f"{variant} ratio"] = ratio(series["diffkit"]["overhead_us"], series["diffusers"]["overhead_us"])
    write_json(args, figures)
    print_ratio(
        figures["no-op UNet ratio"], "per-step overhead, no-op UNet",
        f"tiny UNet with its forward subtracted {figures['tiny UNet ratio']:.2f}x",
    )


if __name__ == "__main__":
    main()

"""Benchmark: per-step overhead of DDPMPipeline (pipeline time minus model time), diffkit vs diffusers.

A tiny UNet keeps the model cheap so that what the pipeline adds around it (scheduler step,
progress bar, bookkeeping) is visible. Model time is measured by timing the UNet's forward
inside the same run. Run: python tests/benchmarks/bench_pipeline_overhead.py [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
)


def timed_forward(model):
    """Wrap ``model.forward`` so that its wall time is summed into ``box[0]``."""
    box = [0.0]
    original = model.forward

    def forward(*args, **kwargs):
        t0 = time.perf_counter()
        out = original(*args, **kwargs)
        box[0] += time.perf_counter() - t0
        return out

    model.forward = forward
    return box


def measure(pipe, steps: int, repeats: int) -> list[float]:
    pipe.set_progress_bar_config(disable=True)
    box = timed_forward(pipe.unet)
    overheads = []
    for r in range(repeats + 1):
        box[0] = 0.0
        t0 = time.perf_counter()
        pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=steps, output_type="np")
        total = time.perf_counter() - t0
        if r:  # the first run warms up
            overheads.append((total - box[0]) / steps * 1e6)
    return overheads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    import diffusers

    from diffkit import DiffusionPipeline

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        ref = diffusers.DDPMPipeline(unet=diffusers.UNet2DModel(**TINY_UNET), scheduler=diffusers.DDPMScheduler())
        ref.save_pretrained(Path(tmp) / "ckpt")
        ours = DiffusionPipeline.from_pretrained(Path(tmp) / "ckpt")
        theirs = diffusers.DDPMPipeline.from_pretrained(Path(tmp) / "ckpt")
        k = statistics.median(measure(ours, args.steps, args.repeats))
        d = statistics.median(measure(theirs, args.steps, args.repeats))
    print(f"DDPMPipeline, tiny UNet, {args.steps} steps, 1 thread: per-step overhead (pipeline - model)")
    print(f"diffkit {k:8.1f} us   diffusers {d:8.1f} us   ratio {k / d:.2f}x")


if __name__ == "__main__":
    main()

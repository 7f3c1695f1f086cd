"""Benchmark (GPU): peak accelerator memory and time of DDPMPipeline with no offload, model and sequential offload.

The UNet has the google/ddpm-ema-church-256 architecture (~114M parameters) with random
weights saved by diffusers. Each mode loads a fresh pipeline from that checkpoint, runs one
warm-up call, then a timed call; the peak is ``torch.cuda.max_memory_allocated`` over the
timed call. Images are compared with the no-offload run. When accelerate is installed,
diffusers' own ``enable_model_cpu_offload`` / ``enable_sequential_cpu_offload`` run too.

Without CUDA it prints why and exits; ``--device cpu --tiny`` checks the script itself on
the CPU (the same hooks, no memory figures).
Run: python tests/benchmarks/bench_offload.py [--steps 10] [--batch 1]
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loading import CHURCH_256  # noqa: E402
from timing import print_ratio  # noqa: E402

TINY = dict(
    sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
)
MODES = ("none", "model", "sequential")


def measure(pipe, mode: str, device: str, steps: int, batch: int) -> tuple[float, float | None, object]:
    """Apply ``mode``, warm up, then time one call; returns (seconds, peak MiB or None, images)."""
    import torch

    if mode == "none":
        pipe.to(device)
    elif mode == "model":
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    pipe.set_progress_bar_config(disable=True)
    cuda = device.startswith("cuda")

    def call(n: int):
        return pipe(batch_size=batch, generator=torch.Generator().manual_seed(0), num_inference_steps=n,
                    output_type="np").images

    call(1)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    images = call(steps)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return seconds, peak, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a tiny UNet, to check the script on the CPU")
    args = parser.parse_args()

    import diffusers
    import numpy as np
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench_offload: skipped, this benchmark needs a CUDA GPU and torch.cuda.is_available() is False "
              "(use --device cpu --tiny to check the script on the CPU)")
        print_ratio(None, "offload (no CUDA device)")
        return
    from diffkit import DiffusionPipeline

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        unet = diffusers.UNet2DModel(**(TINY if args.tiny else CHURCH_256))
        params = sum(p.numel() for p in unet.parameters())
        diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(Path(tmp) / "ckpt")
        del unet
        libraries = [("diffkit", DiffusionPipeline)]
        if importlib.util.find_spec("accelerate") is not None:
            libraries.append(("diffusers", diffusers.DDPMPipeline))
        for library, cls in libraries:
            for mode in MODES:
                pipe = cls.from_pretrained(Path(tmp) / "ckpt")
                seconds, peak, images = measure(pipe, mode, args.device, args.steps, args.batch)
                rows.append((library, mode, seconds, peak, images))
                del pipe
                gc.collect()
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()

    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    print(f"DDPMPipeline, UNet {params / 1e6:.1f}M parameters, {args.steps} steps, batch {args.batch}, on {device_name}")
    if len(libraries) == 1:
        print("(accelerate is not installed: diffusers' offload modes are not measured)")
    reference = rows[0][4]
    print(f"{'library':10s} {'offload':11s} {'time (s)':>9s} {'peak memory (MiB)':>18s} {'max |diff| vs diffkit none':>27s}")
    for library, mode, seconds, peak, images in rows:
        peak_text = f"{peak:18.0f}" if peak is not None else f"{'n/a':>18s}"
        diff = float(np.abs(images - reference).max())
        print(f"{library:10s} {mode:11s} {seconds:9.2f} {peak_text} {diff:27.2e}")
    by_mode = {(library, mode): (seconds, peak) for library, mode, seconds, peak, _ in rows}
    pairs = [(mode, by_mode[("diffkit", mode)], by_mode[("diffusers", mode)]) for mode in MODES
             if ("diffusers", mode) in by_mode]
    if not pairs:
        print_ratio(None, "offload (diffusers' offload needs accelerate)")
        return
    summary = [f"{mode} time {k[0] / d[0]:.2f}x" + (f", peak {k[1] / d[1]:.2f}x" if k[1] else "") for mode, k, d in pairs]
    _, (k_time, k_peak), (d_time, d_peak) = pairs[1]
    if k_peak:
        print_ratio(k_peak / d_peak, "peak accelerator memory with model offload", "; ".join(summary))
    else:
        print_ratio(k_time / d_time, "time with model offload (no memory figure off CUDA)", "; ".join(summary))


if __name__ == "__main__":
    main()

"""Benchmark: sliced attention vs SDPA on the CPU, diffkit and diffusers side by side.

One UNet2DModel checkpoint (random weights, saved by diffusers) whose first level runs
self-attention at 64x64 = 4096 tokens with 8 heads, so attention dominates a forward. Every
configuration runs in a fresh subprocess: the first forward gives the peak RSS growth over
the loaded model (ru_maxrss minus the resident size just before it), the next ones the time.
Each output is compared with diffkit's SDPA output.

diffusers' ``pipe.enable_attention_slicing()`` does nothing on a UNet2DModel (in 0.42.1 only
models with ``set_attention_slice`` take it, and UNet2DModel has none), so its sliced runs
set ``SlicedAttnProcessor`` on every ``Attention`` layer through ``Attention.set_attention_slice``
with the same head counts as diffkit: "auto" = heads // 2, "max" = 1.

Run: python tests/benchmarks/bench_attention_sliced.py [--repeats 3] [--threads 1] [--batch 1]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ATTENTION_64 = dict(
    sample_size=64,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(64, 128),
    norm_num_groups=32,
    attention_head_dim=8,  # 8 heads at 64 channels, 16 in the 32x32 mid block
    down_block_types=("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D"),
)

#: (label, library, attention setting)
CONFIGS = [
    ("diffkit sdpa", "diffkit", "sdpa"),
    ("diffkit sliced auto", "diffkit", "auto"),
    ("diffkit sliced max", "diffkit", "max"),
    ("diffusers sdpa (AttnProcessor2_0)", "diffusers", "sdpa"),
    ("diffusers classic (AttnProcessor)", "diffusers", "classic"),
    ("diffusers sliced auto", "diffusers", "auto"),
    ("diffusers sliced max", "diffusers", "max"),
]

WORKER = """
import json, os, resource, statistics, sys, time
import torch

library, setting, ckpt, out_path, repeats, threads, batch = sys.argv[1:8]
torch.set_num_threads(int(threads))
if library == "diffkit":
    from diffkit_models_unet.unet_2d import UNet2DModel
    model = UNet2DModel.from_pretrained(ckpt).eval()
    if setting == "sdpa":
        model.set_attention_backend("sdpa")
    else:
        model.set_attention_backend("sliced", slice_size=setting)
else:
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0
    model = UNet2DModel.from_pretrained(ckpt).eval()
    for module in model.modules():
        if isinstance(module, Attention):
            if setting == "sdpa":
                module.set_processor(AttnProcessor2_0())
            elif setting == "classic":
                module.set_processor(AttnProcessor())
            else:
                module.set_attention_slice(module.heads // 2 if setting == "auto" else 1)
x = torch.randn(int(batch), 3, 64, 64, generator=torch.Generator().manual_seed(0))

def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

with torch.inference_mode():
    before = resident_bytes()
    out = model(x, 10).sample
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    times = []
    for _ in range(int(repeats)):
        t0 = time.perf_counter()
        model(x, 10)
        times.append(time.perf_counter() - t0)
torch.save(out, out_path)
print(json.dumps({"peak_growth_mb": (peak - before) / 2**20, "seconds": statistics.median(times)}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()

    import diffusers
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "unet"
        torch.manual_seed(0)
        diffusers.UNet2DModel(**ATTENTION_64).save_pretrained(ckpt)
        results = {}
        for label, library, setting in CONFIGS:
            out_path = Path(tmp) / f"{library}-{setting}.pt"
            proc = subprocess.run(
                [sys.executable, "-c", WORKER, library, setting, str(ckpt), str(out_path), str(args.repeats),
                 str(args.threads), str(args.batch)],
                capture_output=True, text=True,
            )
            if proc.returncode:
                raise SystemExit(f"{label} failed:\n{proc.stderr}")
            results[label] = json.loads(proc.stdout.strip().splitlines()[-1])
            results[label]["output"] = torch.load(out_path)

    reference = results["diffkit sdpa"]["output"]
    print(
        f"UNet2DModel, self-attention at 64x64 = 4096 tokens x 8 heads, batch {args.batch}, "
        f"{args.threads} thread(s), median of {args.repeats} forwards"
    )
    print(f"{'configuration':38s} {'time (s)':>9s} {'peak RSS growth (MiB)':>22s} {'max |diff| vs diffkit sdpa':>27s}")
    for label, result in results.items():
        diff = (result["output"] - reference).abs().max().item()
        print(f"{label:38s} {result['seconds']:9.3f} {result['peak_growth_mb']:22.0f} {diff:27.2e}")
    pairs = [("sdpa", "diffusers sdpa (AttnProcessor2_0)"), ("sliced auto", "diffusers sliced auto"),
             ("sliced max", "diffusers sliced max")]
    print("diffkit / diffusers:")
    for ours, theirs in pairs:
        mine, other = results[f"diffkit {ours}"], results[theirs]
        print(
            f"  {ours:12s} time {mine['seconds'] / other['seconds']:.2f}x   "
            f"peak growth {mine['peak_growth_mb'] / max(other['peak_growth_mb'], 1e-9):.2f}x"
        )


if __name__ == "__main__":
    main()

"""Benchmark: sliced attention vs SDPA on the CPU, diffkit and diffusers side by side.

One UNet2DModel checkpoint (random weights, saved by diffusers) whose first level runs
self-attention at 64x64 = 4096 tokens with 8 heads, so attention dominates a forward. Each
configuration runs in a fresh worker process, once per repeat, the configurations interleaved
repeat by repeat. A worker loads the model, runs one small forward (the one-time set-up of
kernels), then measures the memory one forward adds from its own floor: it resets its peak-RSS mark to its current RSS just before the forward and
reads the peak after (``timing.reset_peak_rss``; the worker's ``ru_maxrss`` would start at
its parent's peak). Then it times ``--forwards`` forwards (CPU time of the thread, one torch
thread, by default) and reports their median. Every output is compared with diffkit's SDPA output.

diffusers' ``pipe.enable_attention_slicing()`` does nothing on a UNet2DModel (in 0.42.1 only
models with ``set_attention_slice`` take it, and UNet2DModel has none), so its sliced runs
set ``SlicedAttnProcessor`` on every ``Attention`` layer through ``Attention.set_attention_slice``
with the same head counts as diffkit: "auto" = heads // 2, "max" = 1.

Run: python tests/benchmarks/bench_attention_sliced.py [--repeats 3] [--forwards 2] [--clock cpu] [--tiny]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import BENCH_DIR, interleave, parser, print_ratio, print_setup, ratio, run_python, write_json  # noqa: E402

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
#: (diffkit label, diffusers label) whose ratios are reported
PAIRS = [
    ("diffkit sdpa", "diffusers sdpa (AttnProcessor2_0)"),
    ("diffkit sliced auto", "diffusers sliced auto"),
    ("diffkit sliced max", "diffusers sliced max"),
]

WORKER = """
import json, statistics, sys
sys.path.insert(0, sys.argv[1])
import timing
import torch

library, setting, ckpt, out_path, forwards, clock, size = sys.argv[2:9]
timing.set_torch_threads(clock, 1)
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
x = torch.randn(1, 3, int(size), int(size), generator=torch.Generator().manual_seed(0))

with torch.inference_mode():
    model(x[..., :8, :8], 10)  # kernels and thread pools set up on a small input, outside the measured forward
    floor = timing.reset_peak_rss()
    out = model(x, 10).sample
    growth = timing.peak_rss_mb() - floor
    forward = timing.timed(lambda: model(x, 10), clock)
    seconds = statistics.median(forward() for _ in range(int(forwards)))
if out_path != "-":
    torch.save(out, out_path)
print(json.dumps({"seconds": seconds, "growth_mb": growth}))
"""


def main() -> None:
    p = parser(__doc__, repeats=3, warmup=0)
    p.add_argument("--forwards", type=int, default=2, help="timed forwards per worker (median reported)")
    args = p.parse_args()
    config = dict(ATTENTION_64)
    if args.tiny:
        config.update(sample_size=16)
        args.repeats, args.forwards = 1, 1

    import diffusers
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "unet"
        torch.manual_seed(0)
        diffusers.UNet2DModel(**config).save_pretrained(ckpt)

        def worker(library: str, setting: str):
            first = Path(tmp) / f"{library}-{setting}.pt"

            def run():
                out = "-" if first.exists() else str(first)
                return run_python(
                    ["-c", WORKER, str(BENCH_DIR), library, setting, str(ckpt), out, str(args.forwards), args.clock,
                     str(config["sample_size"])],
                    clock=args.clock,
                )

            return run

        # one untimed worker per library first: writes diffkit's bytecode, fills the page cache
        run_python(["-c", WORKER, str(BENCH_DIR), "diffkit", "sdpa", str(ckpt), "-", "1", args.clock, "8"])
        run_python(["-c", WORKER, str(BENCH_DIR), "diffusers", "sdpa", str(ckpt), "-", "1", args.clock, "8"])
        series = interleave({label: worker(lib, setting) for label, lib, setting in CONFIGS}, args.repeats, warmup=0)
        outputs = {label: torch.load(Path(tmp) / f"{lib}-{setting}.pt") for label, lib, setting in CONFIGS}

    print_setup(
        f"UNet2DModel, self-attention at {config['sample_size']}x{config['sample_size']} tokens x 8 heads, batch 1, "
        f"one forward per worker for memory, median of {args.forwards} for time",
        args,
    )
    print(f"{'configuration':36s} {'forward s':>30s} {'RSS added by a forward, MiB':>36s} {'max |diff|':>10s}")
    reference = outputs["diffkit sdpa"]
    for label, s in series.items():
        diff = (outputs[label] - reference).abs().max().item()
        print(f"{label:36s} {s['seconds'].text():>30s} {s['growth_mb'].text(digits=0):>36s} {diff:10.2e}")
    figures = {}
    for ours, theirs in PAIRS:
        name = ours.removeprefix("diffkit ")
        figures[f"{name} time"] = ratio(series[ours]["seconds"], series[theirs]["seconds"])
        figures[f"{name} memory"] = ratio(series[ours]["growth_mb"], series[theirs]["growth_mb"])
    write_json(args, {f"{label} {m}": s[m] for label, s in series.items() for m in ("seconds", "growth_mb")} | figures)
    print_ratio(
        figures["sdpa time"],
        "forward time with SDPA",
        ", ".join(f"{k} {v:.2f}x" for k, v in figures.items() if k != "sdpa time"),
    )


if __name__ == "__main__":
    main()

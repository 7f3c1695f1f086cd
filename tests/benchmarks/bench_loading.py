"""Benchmark: `from_pretrained` time and peak RSS of a ~113M-parameter UNet2DModel, diffkit vs diffusers.

The checkpoint has the google/ddpm-ema-church-256 architecture with random weights saved by
diffusers. Each load runs in a fresh subprocess so that peak RSS (ru_maxrss) belongs to that
load alone; one untimed load of each library comes first, so that both import from bytecode
(see ``bench_import.fresh_process_env``). Run: python tests/benchmarks/bench_loading.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_import import fresh_process_env  # noqa: E402

CHURCH_256 = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
)

LOAD = """
import json, resource, sys, time
import torch
t0 = time.perf_counter()
if sys.argv[1] == "diffkit":
    from diffkit_models_unet.unet_2d import UNet2DModel
else:
    from diffusers import UNet2DModel
t1 = time.perf_counter()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
model = UNet2DModel.from_pretrained(sys.argv[2])
t2 = time.perf_counter()
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"import_s": t1 - t0, "seconds": t2 - t1, "rss_before_mb": before,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "params": n}))
"""

SAVE = """
import sys, torch
from diffusers import UNet2DModel
torch.manual_seed(0)
UNet2DModel(**CONFIG).save_pretrained(sys.argv[1])
"""


def run(code: str, *args: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True, env=fresh_process_env()
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    # The parent never holds the model: a child inherits its parent's peak RSS across exec.
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet"
        subprocess.run([sys.executable, "-c", f"CONFIG = {CHURCH_256!r}\n" + SAVE, str(path)], check=True)
        results: dict[str, list[dict]] = {"diffkit": [], "diffusers": []}
        for lib in results:  # warm-up: writes bytecode caches, fills the page cache
            run(LOAD, lib, str(path))
        for _ in range(args.repeats):
            for lib in results:  # interleaved, so drift hits both alike
                results[lib].append(run(LOAD, lib, str(path)))
    params = results["diffkit"][0]["params"]
    print(f"UNet2DModel (ddpm-ema-church-256 layout), {params / 1e6:.1f}M parameters, float32 safetensors")
    summary = {}
    for lib, runs in results.items():
        t = statistics.median(r["seconds"] for r in runs)
        imp = statistics.median(r["import_s"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        growth = statistics.median(r["peak_rss_mb"] - r["rss_before_mb"] for r in runs)
        summary[lib] = (t, rss, growth)
        print(f"{lib:10s} import {imp:5.2f} s   from_pretrained {t:5.2f} s   peak RSS {rss:6.0f} MB "
              f"(+{growth:.0f} MB during the load)")
    (t_k, r_k, g_k), (t_d, r_d, g_d) = summary["diffkit"], summary["diffusers"]
    print(f"ratio diffkit/diffusers: from_pretrained time {t_k / t_d:.2f}x, process peak RSS {r_k / r_d:.2f}x, "
          f"RSS growth during the load {g_k:.0f} MB vs {g_d:.0f} MB")


if __name__ == "__main__":
    main()

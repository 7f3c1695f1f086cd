"""Benchmark: `from_pretrained` of a ~113M-parameter UNet2DModel, diffkit vs diffusers: time and memory.

The checkpoint has the google/ddpm-ema-church-256 architecture with random weights saved by
diffusers (float32 safetensors). Both libraries memory-map safetensors, so ``from_pretrained``
alone may read almost nothing; a figure that stops there leaves out the reading. Each repeat
runs one fresh process per library (the libraries interleaved repeat by repeat), which, after
importing its library, reports:

- ``first load``: the first ``from_pretrained`` of the process (it pays one-time costs such as
  diffkit's plugin discovery);
- ``load + read``: that load plus one full read of every weight (a sum over every tensor of
  the state dict), the cost of a model that is actually used;
- ``second load``: another ``from_pretrained`` in the same process, after the first is freed;
- ``peak RSS added``: the peak resident memory of the first load + read, over the process's
  own floor after its imports (``timing.reset_peak_rss``), so imports do not count.

Time is the CPU time of the whole process (``--clock process``, default; loaders may use
threads) or wall time (``--clock wall``). One untimed run of each library comes first: it writes
diffkit's bytecode and puts the checkpoint in the page cache, so both read it from memory.

Run: python tests/benchmarks/bench_loading.py [--repeats 3] [--clock process|wall] [--tiny]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    BENCH_DIR,
    PY,
    Series,
    interleave,
    parser,
    print_ratio,
    print_setup,
    ratio,
    run_python,
    write_json,
)

CHURCH_256 = dict(
    sample_size=256,
    in_channels=3,
    out_channels=3,
    layers_per_block=2,
    block_out_channels=(128, 128, 256, 256, 512, 512),
    down_block_types=("DownBlock2D",) * 4 + ("AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D") + ("UpBlock2D",) * 4,
)
TINY = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
)

#: a fresh process: argv = bench dir, clock, path, then the import statement and the expression that loads
#: ``path`` (e.g. "from diffusers import UNet2DModel", "UNet2DModel.from_pretrained(path)")
LOAD = """
import gc, json, sys
sys.path.insert(0, sys.argv[1])
import timing
import torch

clock, path, import_statement, load_expression = sys.argv[2:6]
read_clock = timing.CLOCKS[clock]
torch.set_num_threads(1)
exec(import_statement)
peak_at_import = timing.peak_rss_mb()

def load():
    return eval(load_expression, globals(), {"path": path})

def tensors(obj):
    modules = [obj] if isinstance(obj, torch.nn.Module) else [
        c for c in obj.components.values() if isinstance(c, torch.nn.Module)]
    for module in modules:
        yield from module.state_dict().values()

floor = timing.reset_peak_rss()
t0 = read_clock()
obj = load()
t1 = read_clock()
peak_load = timing.peak_rss_mb()
with torch.inference_mode():
    total = sum(float(t.sum()) for t in tensors(obj))
t2 = read_clock()
peak_read = timing.peak_rss_mb()
params = sum(t.numel() for t in tensors(obj))
del obj
gc.collect()
t3 = read_clock()
obj = load()
t4 = read_clock()
print(json.dumps({
    "first": t1 - t0, "load_read": t2 - t0, "second": t4 - t3,
    "added_load_mb": peak_load - floor, "added_read_mb": peak_read - floor,
    "process_peak_mb": max(peak_at_import, timing.peak_rss_mb()), "params": params,
}))
"""

#: (name of the figure, unit, scale) in the order printed
FIGURES = [
    ("first", "s", 1.0),
    ("load_read", "s", 1.0),
    ("second", "s", 1.0),
    ("added_load_mb", "MiB", 1.0),
    ("added_read_mb", "MiB", 1.0),
    ("cpu", "s", 1.0),
]
LABELS = {
    "first": "first load (fresh process)",
    "load_read": "first load + read every weight",
    "second": "second load (same process)",
    "added_load_mb": "peak RSS added by the load",
    "added_read_mb": "peak RSS added by load + read",
    "cpu": "whole process CPU (imports too)",
}


def loading_series(
    loaders: Mapping[str, tuple[str, str]], path: Path, clock: str, repeats: int, warmup: int = 1
) -> dict[str, Series]:
    """Interleaved fresh-process loads of ``path``: library -> (import statement, load expression)."""

    def measure(import_statement: str, load_expression: str):
        return lambda: run_python(
            ["-c", LOAD, str(BENCH_DIR), clock, str(path), import_statement,
             load_expression],
            clock=clock,
        )

    return interleave({lib: measure(*how) for lib, how in loaders.items()}, repeats, warmup=warmup)


def print_loading_table(series: Mapping[str, Series], names: Sequence[str] = ("diffkit", "diffusers")) -> dict:
    """One line per figure and library, then the ratio of each figure; returns the ratios."""
    ours, theirs = names
    ratios = {}
    for key, unit, scale in FIGURES:
        for lib in names:
            print(f"{LABELS[key]:34s} {lib:10s} {series[lib][key].text(scale, unit, 3 if unit == 's' else 0)}")
        ratios[key] = ratio(series[ours][key], series[theirs][key])
    print("ratios diffkit/diffusers: " + ", ".join(f"{LABELS[k]} {v:.2f}x" for k, v in ratios.items()))
    return ratios


def main() -> None:
    p = parser(__doc__, repeats=3, clock="process")
    args = p.parse_args()
    config = TINY if args.tiny else CHURCH_256
    if args.tiny:
        args.repeats = 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "unet"
        save = "import sys, torch\nfrom diffusers import UNet2DModel\ntorch.manual_seed(0)\n"
        save += f"UNet2DModel(**{config!r}).save_pretrained(sys.argv[1])\n"
        subprocess.run([PY, "-c", save, str(path)], check=True)
        loaders = {
            "diffkit": ("from diffkit_models_unet.unet_2d import UNet2DModel", "UNet2DModel.from_pretrained(path)"),
            "diffusers": ("from diffusers import UNet2DModel", "UNet2DModel.from_pretrained(path)"),
        }
        series = loading_series(loaders, path, args.clock, args.repeats, args.warmup)
    params = series["diffkit"]["params"].median
    print_setup(
        f"UNet2DModel ({'tiny' if args.tiny else 'ddpm-ema-church-256 layout'}), {params / 1e6:.1f}M parameters, "
        "float32 safetensors, one fresh process per library and repeat",
        args,
    )
    ratios = print_loading_table(series)
    write_json(args, {f"{lib} {k}": series[lib][k] for lib in series for k, _, _ in FIGURES} | ratios)
    print_ratio(
        ratios["load_read"], "first load + read of every weight (fresh process)",
        f"peak RSS added by load + read {ratios['added_read_mb']:.2f}x",
    )


if __name__ == "__main__":
    main()

"""Benchmark: `from_pretrained` of a ~113M-parameter UNet2DModel, diffkit vs diffusers: time and memory.

The checkpoint has the google/ddpm-ema-church-256 architecture with random weights saved by
diffusers (float32 safetensors). A ``from_pretrained`` that memory-maps safetensors may read
almost nothing, so a figure that stops there leaves out the reading; and the first load of a
process pays one-time costs (imports the import statement deferred, diffkit's plugin
discovery), so a figure that starts after the import statement favours whichever library
defers more. Each repeat runs one fresh process per library (the libraries interleaved repeat
by repeat), which reports:

- ``import + first load``: from before the import statement (e.g. ``from diffusers import
  UNet2DModel``) to the first model, and the same plus one full read of every weight (a sum
  over every tensor of the state dict), the cost of a model that is actually used;
- ``second load``: another ``from_pretrained`` in the same process after the first is freed,
  alone and with the read: loading with every import and one-time cost paid;
- ``peak RSS added``: the peak resident memory of that second load (and load + read) over the
  process's floor just before it (``timing.reset_peak_rss``, after ``malloc_trim``), so that
  imports do not count; and the process's own peak RSS up to the end of the first load + read.

Time is the CPU time of the whole process (``--clock process``, default; loaders may use
threads) or wall time (``--clock wall``). One untimed run of each library comes first: it writes
diffkit's bytecode and puts the checkpoint in the page cache, so both read it from memory.

Run: python tests/benchmarks/bench_loading.py [--repeats 3] [--clock process|wall] [--tiny]
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
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
import ctypes, gc, json, sys
sys.path.insert(0, sys.argv[1])
import timing

clock, path, import_statement, load_expression = sys.argv[2:6]
read_clock = timing.CLOCKS[clock]
t0 = read_clock()
exec(import_statement)
t1 = read_clock()
import torch
torch.set_num_threads(1)

def load():
    return eval(load_expression, globals(), {"path": path})

def tensors(obj):
    modules = [obj] if isinstance(obj, torch.nn.Module) else [
        c for c in obj.components.values() if isinstance(c, torch.nn.Module)]
    for module in modules:
        yield from module.state_dict().values()

def read(obj):
    with torch.inference_mode():
        return sum(float(t.sum()) for t in tensors(obj))

t2 = read_clock()
obj = load()
t3 = read_clock()
read(obj)
t4 = read_clock()
process_peak = timing.peak_rss_mb()
params = sum(t.numel() for t in tensors(obj))
del obj
gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
floor = timing.reset_peak_rss()
t5 = read_clock()
obj = load()
t6 = read_clock()
added_load = timing.peak_rss_mb() - floor
read(obj)
t7 = read_clock()
print(json.dumps({
    "import": t1 - t0, "cold": t3 - t0, "cold_read": t4 - t0, "second": t6 - t5, "second_read": t7 - t5,
    "added_load_mb": added_load, "added_read_mb": timing.peak_rss_mb() - floor,
    "process_peak_mb": process_peak, "params": params,
}))
"""

#: (name of the figure, unit, scale) in the order printed
FIGURES = [
    ("import", "s", 1.0),
    ("cold", "s", 1.0),
    ("cold_read", "s", 1.0),
    ("second", "s", 1.0),
    ("second_read", "s", 1.0),
    ("added_load_mb", "MiB", 1.0),
    ("added_read_mb", "MiB", 1.0),
    ("process_peak_mb", "MiB", 1.0),
    ("cpu", "s", 1.0),
]
LABELS = {
    "import": "the import statement alone",
    "cold": "import + first load (fresh process)",
    "cold_read": "import + first load + read weights",
    "second": "second load (same process)",
    "second_read": "second load + read weights",
    "added_load_mb": "peak RSS added by a load",
    "added_read_mb": "peak RSS added by load + read",
    "process_peak_mb": "process peak RSS, import to read",
    "cpu": "whole process CPU",
}


def loading_series(
    loaders: Mapping[str, tuple[str, str]],
    path: Path,
    clock: str,
    repeats: int,
    warmup: int = 1,
    envs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Series]:
    """Interleaved fresh-process loads of ``path``: name -> (import statement, load expression).

    ``envs`` adds environment variables to the processes of some names.
    """

    def measure(name: str, import_statement: str, load_expression: str):
        env = {**os.environ, **(envs or {}).get(name, {})}
        return lambda: run_python(
            ["-c", LOAD, str(BENCH_DIR), clock, str(path), import_statement, load_expression], clock=clock, env=env
        )

    return interleave({name: measure(name, *how) for name, how in loaders.items()}, repeats, warmup=warmup)


def print_loading_table(series: Mapping[str, Series], ours: str = "diffkit") -> dict[str, dict[str, float]]:
    """One line per figure and loader, then diffkit's ratio to each other loader; returns {other: {figure: ratio}}."""
    width = max(map(len, series))
    for key, unit, scale in FIGURES:
        for name, s in series.items():
            print(f"{LABELS[key]:36s} {name:{width}s} {s[key].text(scale, unit, 3 if unit == 's' else 0)}")
    ratios = {}
    for other in series:
        if other != ours:
            ratios[other] = {key: ratio(series[ours][key], series[other][key]) for key, _, _ in FIGURES}
            print(f"ratios {ours}/{other}: " + ", ".join(f"{LABELS[k]} {v:.2f}x" for k, v in ratios[other].items()))
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
    ratios = print_loading_table(series)["diffusers"]
    write_json(args, {f"{lib} {k}": series[lib][k] for lib in series for k, _, _ in FIGURES} | ratios)
    print_ratio(
        ratios["cold_read"], "import + first load + read of every weight (fresh process)",
        f"second load + read {ratios['second_read']:.2f}x, peak RSS added by load + read {ratios['added_read_mb']:.2f}x,"
        f" process peak RSS {ratios['process_peak_mb']:.2f}x",
    )


if __name__ == "__main__":
    main()

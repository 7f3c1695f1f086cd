"""Shared by the full-size pipeline loading benchmarks (``bench_sd_loading.py``, ``bench_sdxl_loading.py``).

One way to do the three things they both do:

- :func:`build`: diffusers builds a pipeline from hand-written configs with random weights and
  saves it, in a process of its own (the benchmark's parent stays small). The weights are created
  directly in the dtype on disk (``torch.set_default_dtype``), so a float16 checkpoint never holds
  a float32 copy in memory: an SDXL UNet's 2.6B parameters take 5.1 GB to build, not 10.3 + 5.1.
- :func:`loaders_and_envs`: the loaders that ``bench_loading.loading_series`` runs in fresh
  processes, plus diffusers once more with accelerate when ``--accelerate DIR`` is given and
  diffkit once more without its NaN/Inf weight check with ``--no-weight-check``.
- :func:`report`: the table, then the ratios against the faster diffusers.

A spec names the diffusers pipeline class and its components: ``unet`` and ``vae`` (diffusers
``UNet2DConditionModel``/``AutoencoderKL`` arguments), ``scheduler`` (class name, arguments),
``text_encoders`` (component name -> transformers class name and ``CLIPTextConfig`` arguments),
``tokenizers`` (component names; each gets the offline CLIP vocabulary of ``diffkit.testing``)
and ``settings`` (other pipeline arguments).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loading import LABELS, print_loading_table  # noqa: E402
from timing import PY, Series, ratio  # noqa: E402

UNCHECKED = "diffkit, no weight check"
ACCELERATE = "diffusers+accelerate"

BUILD = """
import sys
from pathlib import Path
import diffusers, torch, transformers
from transformers import CLIPTextConfig, CLIPTokenizer
from diffkit.testing import write_clip_tokenizer_files

folder, dtype, spec = Path(sys.argv[1]), getattr(torch, sys.argv[2]), eval(sys.argv[3])
torch.manual_seed(0)
torch.set_default_dtype(dtype)  # weights are created in the dtype on disk: no float32 copy
tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(folder.parent / "offline-tokenizer"))
ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
           pad_token_id=tokenizer.pad_token_id)
components = {name: getattr(transformers, cls)(CLIPTextConfig(**config, **ids))
              for name, (cls, config) in spec["text_encoders"].items()}
components |= {name: tokenizer for name in spec["tokenizers"]}
scheduler_class, scheduler_config = spec["scheduler"]
pipe = getattr(diffusers, spec["pipeline"])(
    unet=diffusers.UNet2DConditionModel(**spec["unet"]), vae=diffusers.AutoencoderKL(**spec["vae"]),
    scheduler=getattr(diffusers, scheduler_class)(**scheduler_config), **components, **spec["settings"],
)
torch.set_default_dtype(torch.float32)
pipe.save_pretrained(folder)
"""


def add_options(p: argparse.ArgumentParser, dtype: str) -> None:
    """The options both loading benchmarks add to ``timing.parser``."""
    p.add_argument("--dtype", choices=["float32", "float16"], default=dtype, help=f"weights on disk (default {dtype})")
    p.add_argument("--accelerate", metavar="DIR", help="a folder with accelerate + psutil: diffusers loads once more "
                   "with it on PYTHONPATH")
    p.add_argument("--no-weight-check", action="store_true", help="diffkit loads once more with "
                   "DIFFKIT_CHECK_WEIGHTS=0 (its NaN/Inf check of every weight off), to show what the check costs")
    p.add_argument("--checkpoint", metavar="DIR", help="build the checkpoint here once and keep it (else a temp dir)")


def build(folder: Path, dtype: str, spec: Mapping[str, Any]) -> None:
    """Have diffusers build the pipeline of ``spec`` with random weights and save it to ``folder``."""
    subprocess.run([PY, "-c", BUILD, str(folder), dtype, repr(dict(spec))], check=True)


def size_gb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*.safetensors")) / 1e9


@contextmanager
def checkpoint(args: argparse.Namespace, name: str, spec: Mapping[str, Any]) -> Iterator[Path]:
    """The checkpoint folder: ``--checkpoint DIR`` (built there once, kept) or a temp dir under /tmp, deleted after."""
    if args.checkpoint:
        folder, tmp = Path(args.checkpoint), None
    else:
        tmp = tempfile.mkdtemp(prefix=f"diffkit-{name}-bench-", dir="/tmp")
        folder = Path(tmp) / name
    try:
        if not (folder / "model_index.json").exists():
            build(folder, args.dtype, spec)
        yield folder
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def loaders_and_envs(
    args: argparse.Namespace, loaders: Mapping[str, tuple[str, str]]
) -> tuple[dict[str, tuple[str, str]], dict[str, dict[str, str]]]:
    """``loaders`` ("diffkit", "diffusers": import statement, load expression) plus the optional runs."""
    out, envs = dict(loaders), {}
    if args.accelerate:
        out[ACCELERATE] = loaders["diffusers"]
        envs[ACCELERATE] = {"PYTHONPATH": str(Path(args.accelerate).resolve())}
    if args.no_weight_check:
        out[UNCHECKED] = loaders["diffkit"]
        envs[UNCHECKED] = {"DIFFKIT_CHECK_WEIGHTS": "0"}
    return out, envs


def report(series: Mapping[str, Series], ours: str = "diffkit",
           unchecked: str | None = UNCHECKED) -> tuple[str, dict[str, float], str]:
    """Print the table; return the fastest other loader (by import + first load + read), diffkit's ratios to it,
    and a note of what the run without weight check gives (empty without one)."""
    ratios = print_loading_table(series, ours)
    others = [o for o in ratios if o != unchecked]
    best = min(others, key=lambda other: series[other]["cold_read"].median)
    note = ""
    if unchecked in series:
        u = {k: ratio(series[unchecked][k], series[best][k]) for k in ratios[best]}
        print(f"ratios {unchecked}/{best}: " + ", ".join(f"{LABELS[k]} {v:.2f}x" for k, v in u.items()))
        note = f"; without the weight check {u['cold_read']:.2f}x and process peak RSS {u['process_peak_mb']:.2f}x"
    return best, ratios[best], note


def json_figures(series: Mapping[str, Series], ratios: Mapping[str, Mapping[str, float]] | None = None) -> dict:
    """Every figure of every loader (and the given ratios) for ``--json``."""
    out: dict[str, Any] = {f"{n} {k}": s[k] for n, s in series.items() for k in s.records[0]}
    for other, r in (ratios or {}).items():
        out |= {f"{other} {k}": v for k, v in r.items()}
    return out


def cuda_available() -> bool:
    """Whether a CUDA device is usable, asked in a child so the parent never imports torch."""
    probe = "import torch; print(int(torch.cuda.is_available()))"
    out = subprocess.run([PY, "-c", probe], capture_output=True, text=True, env=dict(os.environ))
    return out.stdout.strip() == "1"

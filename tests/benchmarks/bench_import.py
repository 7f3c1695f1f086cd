"""Benchmark: start-up cost of diffkit against diffusers, each command in a fresh interpreter.

Two comparisons, both interleaved command by command in every repeat, each command in a fresh
process charged its own CPU time (user + system; ``--clock wall`` for wall time):

- ``import diffkit`` vs ``import diffusers``: the bare package. ``import diffkit`` loads neither
  torch nor any plugin while ``import diffusers`` loads torch, so this ratio flatters diffkit;
  it is shown, not reported.
- ready to use: ``from diffkit import DiffusionPipeline`` plus one registry lookup (what
  ``from_pretrained`` does to find a pipeline class: plugin discovery and the import of that
  class, torch included) vs ``from diffusers import DiffusionPipeline``. This is the reported
  ratio.

Also shown: bare interpreter start-up (every figure includes it; the ``net`` column takes it
off), ``diffkit list`` and ``from diffusers import DDPMPipeline``. Goals, on the clock used:
``import diffkit`` < 0.1 s, ``diffkit list`` < 0.5 s. ``--profile`` adds ``python -X importtime``
breakdowns of the diffkit commands.

Run: python tests/benchmarks/bench_import.py [--repeats 5] [--clock cpu|wall] [--profile] [--tiny]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import PY, interleave, parser, print_ratio, print_setup, ratio, run_python, write_json  # noqa: E402

READY_DIFFKIT = "from diffkit import DiffusionPipeline, registry; registry.get('pipeline', 'DDPMPipeline')"

#: name -> interpreter arguments
COMMANDS: dict[str, list[str]] = {
    "python (bare start-up)": ["-c", "pass"],
    "import diffkit": ["-c", "import diffkit"],
    "import diffusers": ["-c", "import diffusers"],
    "diffkit: DiffusionPipeline + lookup": ["-c", READY_DIFFKIT],
    "diffusers: DiffusionPipeline": ["-c", "from diffusers import DiffusionPipeline"],
    "diffkit list": ["-m", "diffkit", "list"],
    "from diffusers import DDPMPipeline": ["-c", "from diffusers import DDPMPipeline"],
}
BASELINE = "python (bare start-up)"
GOALS = {"import diffkit": 0.1, "diffkit list": 0.5}
BARE = ("import diffkit", "import diffusers")
READY = ("diffkit: DiffusionPipeline + lookup", "diffusers: DiffusionPipeline")


def importtime_profile(args: list[str], top: int = 12) -> list[tuple[str, float, float]]:
    """(module, self s, cumulative s) of the slowest imports of ``python -X importtime *args``."""
    proc = subprocess.run([PY, "-X", "importtime", *args], capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, module = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((module, int(self_us) / 1e6, int(cumulative_us) / 1e6))
    return sorted(rows, key=lambda row: row[2], reverse=True)[:top]


def main(argv: list[str] | None = None) -> None:
    p = parser(__doc__, repeats=5)
    p.add_argument("--profile", action="store_true", help="also print -X importtime breakdowns")
    args = p.parse_args(argv)
    if args.tiny:
        args.repeats = 1

    def command(cmd: list[str]):
        return lambda: run_python(cmd, clock=args.clock)

    series = interleave({name: command(cmd) for name, cmd in COMMANDS.items()}, args.repeats, args.warmup)
    figures = {name: s["seconds"] for name, s in series.items()}
    base = figures[BASELINE].median

    print_setup("Start-up, one fresh interpreter per command and repeat: seconds", args)
    print(f"{'command':36s} {'seconds':>44s} {'net of start-up':>16s}  goal")
    for name, f in figures.items():
        goal = GOALS.get(name)
        verdict = "" if goal is None else f"< {goal:.1f} s: {'met' if f.median < goal else 'MISSED'}"
        print(f"{name:36s} {f.text():>44s} {f.median - base if name != BASELINE else f.median:16.3f}  {verdict}")
    bare, ready = ratio(figures[BARE[0]], figures[BARE[1]]), ratio(figures[READY[0]], figures[READY[1]])
    print(f"bare package: {BARE[0]} / {BARE[1]} = {bare:.3f}x (diffkit loads no torch here; flatters)")

    if args.profile:
        for name in ("import diffkit", READY[0], "diffkit list"):
            print(f"\n-X importtime of {name!r}: slowest imports (cumulative s, self s)")
            for module, self_s, cumulative in importtime_profile(COMMANDS[name]):
                print(f"  {cumulative:7.3f} {self_s:7.3f}  {module}")
    write_json(args, figures | {"bare ratio": bare, "ready ratio": ready})
    print_ratio(ready, f"ready to use: {READY[0]} vs {READY[1]}", f"bare import {bare:.3f}x")


if __name__ == "__main__":
    main()

"""Benchmark: start-up cost of ``import diffkit`` and ``diffkit list``, side by side with ``import diffusers``.

Each command runs in a fresh interpreter (so nothing is cached in ``sys.modules``) ``--runs`` times after
one warm-up run; the script reports the best and median wall time, the same net of bare interpreter
start-up, and the ratios diffkit/diffusers. Goals: ``import diffkit`` < 0.1 s, ``diffkit list`` < 0.5 s.
It reports; it never fails on time. ``--profile`` adds ``python -X importtime`` breakdowns of the diffkit
commands, to see what dominates.

    python tests/benchmarks/bench_import.py [--runs 5] [--profile] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

PY = sys.executable


def fresh_process_env() -> dict[str, str]:
    """The environment of timed subprocesses: with bytecode caching, as for installed packages.

    pip writes ``.pyc`` files for what it installs (diffusers here); editable installs (diffkit
    in a checkout) get them at their first import, unless ``PYTHONDONTWRITEBYTECODE`` is set,
    in which case every run would compile diffkit from source while diffusers reads bytecode.
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env

#: name -> interpreter arguments
COMMANDS: dict[str, list[str]] = {
    "python (bare start-up)": ["-c", "pass"],
    "import diffkit": ["-c", "import diffkit"],
    "diffkit list": ["-m", "diffkit", "list"],
    "diffkit plugins": ["-m", "diffkit", "plugins"],
    "import diffusers": ["-c", "import diffusers"],
    "from diffusers import DDPMPipeline": ["-c", "from diffusers import DDPMPipeline"],
}
BASELINE = "python (bare start-up)"
#: goal in seconds, wall time including interpreter start-up
GOALS = {"import diffkit": 0.1, "diffkit list": 0.5}
#: (diffkit command, diffusers command) pairs whose ratio is reported
RATIOS = [
    ("import diffkit", "import diffusers"),
    ("diffkit list", "import diffusers"),
    ("diffkit list", "from diffusers import DDPMPipeline"),
]


@dataclass
class Timing:
    name: str
    runs: list[float]

    @property
    def best(self) -> float:
        return min(self.runs)

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


def time_command(args: list[str], runs: int) -> list[float]:
    """Wall times of ``python *args`` in fresh processes (after one untimed warm-up run)."""
    env = fresh_process_env()
    subprocess.run([PY, *args], capture_output=True, check=True, env=env)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([PY, *args], capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def importtime_profile(args: list[str], top: int = 12) -> list[tuple[str, float, float]]:
    """(module, self s, cumulative s) of the slowest imports of ``python -X importtime *args``."""
    proc = subprocess.run(
        [PY, "-X", "importtime", *args], capture_output=True, text=True, check=True, env=fresh_process_env()
    )
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cumulative_us, module = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((module, int(self_us) / 1e6, int(cumulative_us) / 1e6))
    # top-level imports only (no leading spaces in the original name) give the cumulative picture
    return sorted(rows, key=lambda row: row[2], reverse=True)[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    parser.add_argument("--profile", action="store_true", help="also print -X importtime breakdowns")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    commands = dict(COMMANDS)
    if importlib.util.find_spec("diffusers") is None:
        print("diffusers is not installed: only the diffkit side is measured", file=sys.stderr)
        commands = {k: v for k, v in commands.items() if "diffusers" not in k}
    timings = {name: Timing(name, time_command(cmd, args.runs)) for name, cmd in commands.items()}
    base = timings[BASELINE].median

    ratios = {f"{a} / {b}": timings[a].median / timings[b].median for a, b in RATIOS if a in timings and b in timings}
    if args.json:
        print(
            json.dumps(
                {
                    "python": sys.version.split()[0],
                    "runs": args.runs,
                    "seconds": {t.name: {"best": t.best, "median": t.median, "runs": t.runs} for t in timings.values()},
                    "ratios_of_medians": ratios,
                    "goals": {k: {"goal": v, "median": timings[k].median} for k, v in GOALS.items()},
                },
                indent=2,
            )
        )
        return 0

    print(f"python {sys.version.split()[0]} at {PY}; {args.runs} runs per command, fresh process each")
    print(f"{'command':38} {'best':>8} {'median':>8} {'median-start-up':>16}  goal")
    for t in timings.values():
        goal = GOALS.get(t.name)
        verdict = "" if goal is None else f"< {goal:.1f} s: {'met' if t.median < goal else 'MISSED'}"
        net = t.median - base if t.name != BASELINE else t.median
        print(f"{t.name:38} {t.best:8.3f} {t.median:8.3f} {net:16.3f}  {verdict}")
    if ratios:
        print()
        print("ratios (medians, start-up included):")
        for label, value in ratios.items():
            print(f"  {label:58} {value:6.3f}")

    if args.profile:
        for name in ("import diffkit", "diffkit list"):
            print()
            print(f"-X importtime of {name!r}: slowest imports (cumulative s, self s)")
            for module, self_s, cumulative in importtime_profile(commands[name]):
                print(f"  {cumulative:7.3f} {self_s:7.3f}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

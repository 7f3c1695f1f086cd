"""The one timing harness of every benchmark in ``tests/benchmarks``.

What it enforces, so that no benchmark can flatter diffkit on a shared, loaded machine:

- **Interleaving.** :func:`interleave` runs the cases in turn, repeat by repeat, rotating which
  goes first, so that a burst of load from other jobs hits both libraries alike.
- **Warm-up.** Each case runs ``warmup`` times untimed before the first timed repeat.
- **CPU time by default.** :func:`timed` reads ``time.thread_time`` (``--clock cpu``), which other
  processes barely disturb; ``--clock process`` takes all threads of the process, ``--clock wall``
  the wall clock. A fresh process is charged its own CPU time (user + system, read from
  ``RUSAGE_CHILDREN``) or its wall time by :func:`run_python`.
- **Spread and load.** Every figure is printed as median with min and max, and beside it the
  range of the machine's 1-minute load average over the repeats that produced it.
- **Bytecode.** Importing this module drops ``PYTHONDONTWRITEBYTECODE`` from the environment of
  this process and of every process it starts: pip wrote ``.pyc`` files for diffusers, and an
  editable diffkit gets them at its first import (a warm-up run) only if writing them is allowed;
  otherwise every diffkit start-up would compile from source while diffusers reads bytecode.
- **Memory from the process's own floor.** :func:`reset_peak_rss` and :func:`peak_rss_mb` use
  ``/proc/self/clear_refs`` and ``VmHWM``: a child's ``ru_maxrss`` starts at its parent's peak
  (Linux carries it across fork and exec), so it cannot measure what a child adds.
- **The ratio last.** :func:`print_ratio` prints ``ratio diffkit/diffusers ...`` and every
  benchmark calls it last.

Only the standard library is imported here, so that a measured child process can import this
module without importing torch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

BENCH_DIR = Path(__file__).resolve().parent
PY = sys.executable

CLOCKS: dict[str, Callable[[], float]] = {
    "cpu": time.thread_time,
    "process": time.process_time,
    "wall": time.perf_counter,
}

Record = dict[str, float]
Step = Callable[[], object]
Measure = Callable[[], "float | Mapping[str, float]"]


def load_average() -> float:
    """The machine's 1-minute load average."""
    return os.getloadavg()[0]


@dataclass
class Figure:
    """Repeated measurements of one quantity, with the load average at each."""

    values: list[float]
    loads: list[float]

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def text(self, scale: float = 1.0, unit: str = "", digits: int = 3) -> str:
        """``median (min..max) unit  [load a-b]``, values multiplied by ``scale``."""
        m, lo, hi = (f"{v * scale:.{digits}f}" for v in (self.median, self.min, self.max))
        return f"{m} ({lo}..{hi}){' ' + unit if unit else ''}  [load {min(self.loads):.2f}-{max(self.loads):.2f}]"

    def scaled(self, k: float) -> Figure:
        """The same figure for ``k`` times the work (e.g. ``k`` random draws instead of one)."""
        return Figure([v * k for v in self.values], list(self.loads))

    def as_dict(self) -> dict[str, object]:
        return {"median": self.median, "min": self.min, "max": self.max, "values": self.values, "loads": self.loads}


@dataclass
class Series:
    """Every record one case produced, in order, with the load average after each."""

    records: list[Record] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)

    def add(self, record: Record) -> None:
        self.records.append(record)
        self.loads.append(load_average())

    def __getitem__(self, metric: str) -> Figure:
        return Figure([r[metric] for r in self.records], list(self.loads))


def _as_record(value: float | Mapping[str, float]) -> Record:
    return dict(value) if isinstance(value, Mapping) else {"seconds": float(value)}


def interleave(cases: Mapping[str, Measure], repeats: int, warmup: int = 1) -> dict[str, Series]:
    """Run every case ``warmup`` times untimed, then ``repeats`` rounds of one run each.

    Round ``r`` starts with case ``r mod n``, so each case goes first equally often. A case
    returns seconds (stored as ``"seconds"``) or a mapping of named figures.
    """
    names = list(cases)
    for _ in range(warmup):
        for name in names:
            cases[name]()
    out = {name: Series() for name in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].add(_as_record(cases[name]()))
    return out


def timed(fn: Callable[[], object], clock: str = "cpu", calls: int = 1) -> Callable[[], float]:
    """A measure returning the seconds per call of ``fn`` over ``calls`` calls, on ``clock``."""
    read = CLOCKS[clock]

    def measure() -> float:
        start = read()
        for _ in range(calls):
            fn()
        return (read() - start) / calls

    return measure


def run_python(args: Sequence[str], clock: str = "cpu", env: Mapping[str, str] | None = None) -> Record:
    """Run ``python *args`` in a fresh process; its cost as ``"seconds"`` plus what it printed.

    ``"seconds"`` is the child's CPU time (user + system) under ``clock`` "cpu" or "process",
    else its wall time; ``"wall"`` and ``"cpu"`` are both kept. If the child's last line of
    output is a JSON object, its numbers are merged in.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run([PY, *args], capture_output=True, text=True, env=dict(env) if env is not None else None)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise RuntimeError(f"python {' '.join(args)[:200]} failed with exit code {proc.returncode}:\n{proc.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    record: Record = {"seconds": wall if clock == "wall" else cpu, "wall": wall, "cpu": cpu}
    lines = proc.stdout.strip().splitlines()
    if lines and lines[-1].startswith("{"):
        record.update({k: float(v) for k, v in json.loads(lines[-1]).items() if isinstance(v, (int, float))})
    return record


# --- memory of this process, from its own floor (Linux) ---------------------------------------


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key} line: peak memory needs Linux")


def rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    return _status_kb("VmRSS") / 1024


def reset_peak_rss() -> float:
    """Reset this process's peak-RSS mark to its current RSS; returns that RSS in MiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return rss_mb()


def peak_rss_mb() -> float:
    """This process's peak RSS since exec or since :func:`reset_peak_rss`, MiB."""
    return _status_kb("VmHWM") / 1024


# --- command line and output -------------------------------------------------------------------


def parser(doc: str, *, repeats: int, warmup: int = 1, clock: str = "cpu") -> argparse.ArgumentParser:
    """The options every benchmark shares; a benchmark adds its own to the parser returned."""
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--repeats", "--rounds", type=int, default=repeats, help=f"timed rounds (default {repeats})")
    p.add_argument("--warmup", type=int, default=warmup, help=f"untimed runs of each case first (default {warmup})")
    p.add_argument("--clock", choices=list(CLOCKS), default=clock, help=f"what to time (default {clock})")
    p.add_argument("--tiny", action="store_true", help="the smallest sizes and counts: checks the script, not speed")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    return p


def set_torch_threads(clock: str, threads: int | None = None) -> None:
    """One torch thread under a CPU clock (``thread_time`` sees only the calling thread), else ``threads``."""
    import torch

    if clock == "cpu":
        torch.set_num_threads(1)
    elif threads:
        torch.set_num_threads(threads)


def print_setup(what: str, args: argparse.Namespace) -> None:
    """The first line: what is measured, the clock, the repeats, versions and the load now."""
    from importlib.metadata import PackageNotFoundError, version

    versions = [f"python {sys.version.split()[0]}"]
    for name in ("torch", "diffusers", "transformers"):
        try:
            versions.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    print(
        f"{what}\n  {args.clock} clock, {args.repeats} interleaved repeats after {args.warmup} warm-up, "
        f"median (min..max) [1-min load average over the repeats]; {', '.join(versions)}; "
        f"{os.cpu_count()} CPUs, load now {load_average():.2f}"
    )


def ratio(ours: Figure, theirs: Figure) -> float:
    """Median over median (nan when the denominator is 0)."""
    return ours.median / theirs.median if theirs.median else math.nan


def geometric_mean(values: Sequence[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def write_json(args: argparse.Namespace, figures: Mapping[str, Figure | float]) -> None:
    if not getattr(args, "json", None):
        return
    payload = {k: (v.as_dict() if isinstance(v, Figure) else v) for k, v in figures.items()}
    Path(args.json).write_text(json.dumps(payload, indent=2))


def print_ratio(value: float | None, what: str, extra: str = "") -> None:
    """The last line of every benchmark: ``ratio diffkit/diffusers X.XXx <what>`` (``n/a`` when not measured)."""
    shown = "n/a" if value is None else f"{value:.2f}x"
    print(f"ratio diffkit/diffusers {shown} {what}{'; ' + extra if extra else ''}")


# --- per-call tables (the scheduler-step benchmarks) -------------------------------------------

_per_call_clock = "cpu"


def per_call_args(doc: str, *, repeats: int, calls: int, warmup: int) -> argparse.Namespace:
    """Parse the shared options plus ``--steps`` (calls per repeat) and ``--threads``; apply them.

    ``warmup`` counts untimed calls of each library here (see :func:`alternate`).
    """
    global _per_call_clock
    p = parser(doc, repeats=repeats, warmup=warmup)
    p.add_argument("--steps", type=int, default=calls, help=f"calls per repeat (default {calls})")
    p.add_argument("--threads", type=int, default=None, help="torch threads under --clock process/wall")
    args = p.parse_args()
    if args.tiny:
        args.repeats, args.steps, args.warmup = 2, 2, 1
    _per_call_clock = args.clock
    set_torch_threads(args.clock, args.threads)
    return args


def alternate(ours: Callable[[], object], theirs: Callable[[], object], repeats: int, calls: int, warmup: int
              ) -> tuple[Figure, Figure]:
    """Seconds per call of ``ours`` and ``theirs``, interleaved repeat by repeat (``calls`` calls each).

    ``warmup`` untimed calls of each come first.
    """
    for _ in range(warmup):
        ours()
        theirs()
    series = interleave(
        {"diffkit": timed(ours, _per_call_clock, calls), "diffusers": timed(theirs, _per_call_clock, calls)},
        repeats,
        warmup=0,
    )
    return series["diffkit"]["seconds"], series["diffusers"]["seconds"]


def randn_figure(shape: tuple[int, ...], repeats: int, calls: int) -> Figure:
    """Seconds per ``torch.randn`` draw of ``shape``: the floor that both libraries' noisy steps share."""
    import torch

    g = torch.Generator().manual_seed(0)
    return interleave({"randn": timed(lambda: torch.randn(shape, generator=g), _per_call_clock, calls)}, repeats)[
        "randn"
    ]["seconds"]


def print_table_header(width: int, randn_column: bool = True) -> None:
    """Column titles of a per-call table (microseconds)."""
    extra = f"{'w/o randn':>10}" if randn_column else ""
    print(f"{'case':<{width}}{'shape':<18}{'diffkit us':>24}{'diffusers us':>24}{'ratio':>7}{extra}  load")


def print_row(name: str, shape: tuple[int, ...], ours: Figure, ref: Figure, width: int,
              floor: Figure | None = None) -> float:
    """One case; with a ``floor``, also the ratio with that floor taken off both sides. Returns the ratio."""

    def us(f: Figure) -> str:
        return f"{f.median * 1e6:.1f} ({f.min * 1e6:.1f}..{f.max * 1e6:.1f})"

    r = ratio(ours, ref)
    without = f"{(ours.median - floor.median) / (ref.median - floor.median):>10.2f}" if floor is not None else ""
    loads = ours.loads + ref.loads
    print(f"{name:<{width}}{str(shape):<18}{us(ours):>24}{us(ref):>24}{r:>7.2f}{without}  "
          f"{min(loads):.2f}-{max(loads):.2f}")
    return r


def print_floor(shape: tuple[int, ...], floor: Figure, width: int) -> None:
    """The line with the time of the random draw alone."""
    print(f"{'  (randn draw alone)':<{width}}{str(shape):<18}"
          f"{f'{floor.median * 1e6:.1f} ({floor.min * 1e6:.1f}..{floor.max * 1e6:.1f})':>24}")

"""Timing harness shared by the scheduler-step benchmarks (``bench_schedulers_*.py``).

It times a call in microseconds under the chosen clock (wall or the calling thread's CPU time),
times diffkit and diffusers alternately in rounds and reports the median round of each, times a
Gaussian draw alone as the floor both libraries share, and holds the common command-line options
and table lines. Each benchmark keeps its own cases and their set-up.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import diffusers
import torch

Step = Callable[[], object]
Shape = tuple[int, ...]

CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.thread_time}
_clock: Callable[[], float] = CLOCKS["wall"]


def use_clock(name: str) -> None:
    """Make ``per_step_us`` time with the clock called ``name`` ("wall" or "cpu")."""
    global _clock
    _clock = CLOCKS[name]


def per_step_us(fn: Step, steps: int) -> float:
    """Mean microseconds per call of ``fn`` over ``steps`` calls."""
    clock = _clock
    start = clock()
    for _ in range(steps):
        fn()
    return (clock() - start) / steps * 1e6


def alternate(ours: Step, theirs: Step, rounds: int, steps: int, warmup: int) -> tuple[float, float]:
    """Median per-call microseconds of ``ours`` and ``theirs``, which take turns going first each round."""
    for fn in (ours, theirs):
        per_step_us(fn, warmup)
    ours_us: list[float] = []
    ref_us: list[float] = []
    for r in range(rounds):
        order = [(ours, ours_us), (theirs, ref_us)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(per_step_us(fn, steps))
    return statistics.median(ours_us), statistics.median(ref_us)


def randn_us(shape: Shape, rounds: int, steps: int) -> float:
    """Median per-call microseconds of one ``torch.randn`` draw of ``shape``."""
    g = torch.Generator().manual_seed(0)
    return statistics.median(per_step_us(lambda: torch.randn(shape, generator=g), steps) for _ in range(rounds))


def parse_args(doc: str, *, rounds: int, steps: int, clock: str = "wall", threads: bool = True) -> argparse.Namespace:
    """Parse the shared options (``--threads`` only if ``threads``); apply the clock and thread count."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--steps", type=int, default=steps)
    if threads:
        parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default=clock)
    args = parser.parse_args()
    use_clock(args.clock)
    if args.clock == "cpu":
        torch.set_num_threads(1)
    elif getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return args


def print_header(
    args: argparse.Namespace, width: int, detail: str = "", threads: str | None = None, randn_column: bool = True
) -> None:
    """Print the versions and settings line, then the column titles."""
    threads = threads or f"{torch.get_num_threads()} thread(s)"
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, {threads}, "
        f"{args.clock} clock, median of {args.rounds} rounds x {args.steps} steps{detail}"
    )
    randn_title = f"{'ratio w/o randn':>17}" if randn_column else ""
    print(f"{'case':<{width}}{'shape':<18}{'diffkit us':>11}{'diffusers us':>14}{'ratio':>7}{randn_title}")


def print_row(name: str, shape: Shape, ours: float, ref: float, width: int, floor: float | None = None) -> None:
    """Print one case; with a ``floor``, also the ratio with that floor taken off both sides."""
    without = f"{(ours - floor) / (ref - floor):>17.2f}" if floor is not None else ""
    print(f"{name:<{width}}{str(shape):<18}{ours:>11.1f}{ref:>14.1f}{ours / ref:>7.2f}{without}")


def print_floor(shape: Shape, floor: float, width: int) -> None:
    """Print the line with the time of the random draw alone."""
    print(f"{'  (randn draw alone)':<{width}}{str(shape):<18}{floor:>11.1f}")

"""Benchmark: the cost of one scheduler ``step``, diffkit vs diffusers, DDPM and DDIM.

Each scheduler plans once (50 steps) and then steps repeatedly from a mid-schedule timestep,
so the numbers are the per-step cost only. The two libraries alternate in rounds within the
same process, and the median round is reported, which keeps a busy machine from favouring
either side. DDPM draws Gaussian noise each step (as diffusers does, from the same generator);
that draw is timed on its own too, as a floor both libraries share.

``--clock cpu`` times the CPU time of the calling thread with one torch thread, which a machine
shared with other jobs disturbs far less than wall time.

Run: python tests/benchmarks/bench_schedulers_ddpm_ddim.py [--rounds 15] [--steps 200] [--threads N] [--clock cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import diffusers
import torch

from diffkit_scheduler_ddim.ddim import DDIMScheduler
from diffkit_scheduler_ddpm.ddpm import DDPMScheduler

SHAPES = [(1, 3, 32, 32), (1, 4, 128, 128)]
CASES = [
    ("DDPM", DDPMScheduler, diffusers.DDPMScheduler, {}, {}),
    (
        "DDPM v-pred, thresholding",
        DDPMScheduler,
        diffusers.DDPMScheduler,
        {"prediction_type": "v_prediction", "thresholding": True},
        {},
    ),
    ("DDIM eta=0", DDIMScheduler, diffusers.DDIMScheduler, {}, {"eta": 0.0}),
    (
        "DDIM eta=1, clipped eps",
        DDIMScheduler,
        diffusers.DDIMScheduler,
        {},
        {"eta": 1.0, "use_clipped_model_output": True},
    ),
]


CLOCK = time.perf_counter


def per_step_us(fn, steps: int) -> float:
    start = CLOCK()
    for _ in range(steps):
        fn()
    return (CLOCK() - start) / steps * 1e6


def bench_case(ours_cls, ref_cls, config, step_kwargs, shape, rounds, steps):
    g = torch.Generator().manual_seed(0)
    sample, model_output = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    state = ours_cls(**config).plan(50)
    ref = ref_cls(**config)
    ref.set_timesteps(50)
    t_ours, t_ref = state.timesteps[25], ref.timesteps[25]
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)

    def ours():
        state.step(model_output, t_ours, sample, generator=g_ours, **step_kwargs)

    def theirs():
        ref.step(model_output, t_ref, sample, generator=g_ref, **step_kwargs)

    for fn in (ours, theirs):
        per_step_us(fn, 20)
    ours_us, ref_us = [], []
    for r in range(rounds):
        order = [(ours, ours_us), (theirs, ref_us)]
        for fn, out in order if r % 2 == 0 else order[::-1]:
            out.append(per_step_us(fn, steps))
    return statistics.median(ours_us), statistics.median(ref_us)


def randn_us(shape, rounds, steps) -> float:
    g = torch.Generator().manual_seed(0)
    return statistics.median(per_step_us(lambda: torch.randn(shape, generator=g), steps) for _ in range(rounds))


def main() -> None:
    global CLOCK
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    args = parser.parse_args()
    if args.clock == "cpu":
        CLOCK = time.thread_time
        torch.set_num_threads(1)
    elif args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, {torch.get_num_threads()} thread(s), "
        f"{args.clock} clock, median of {args.rounds} rounds x {args.steps} steps, 50-step plan, t = timesteps[25]"
    )
    print(f"{'case':<28}{'shape':<18}{'diffkit us':>11}{'diffusers us':>14}{'ratio':>7}{'ratio w/o randn':>17}")
    for shape in SHAPES:
        floor = randn_us(shape, args.rounds, args.steps)
        for name, ours_cls, ref_cls, config, step_kwargs in CASES:
            ours, ref = bench_case(ours_cls, ref_cls, config, step_kwargs, shape, args.rounds, args.steps)
            draws = ours_cls is DDPMScheduler or step_kwargs.get("eta", 0) > 0
            without = f"{(ours - floor) / (ref - floor):>17.2f}" if draws else ""
            print(f"{name:<28}{str(shape):<18}{ours:>11.1f}{ref:>14.1f}{ours / ref:>7.2f}{without}")
        print(f"{'  (randn draw alone)':<28}{str(shape):<18}{floor:>11.1f}")


if __name__ == "__main__":
    main()

"""Benchmark: the cost of one scheduler ``step``, diffkit vs diffusers, DDPM and DDIM.

Each scheduler plans once (50 steps) and then steps repeatedly from a mid-schedule timestep,
so the numbers are the per-step cost only. The two libraries alternate in rounds within the
same process, and the median round is reported, which keeps a busy machine from favouring
either side. DDPM draws Gaussian noise each step (as diffusers does, from the same generator);
that draw is timed on its own too, as a floor both libraries share.

The calling thread's CPU time with one torch thread is the default clock (``--clock wall`` for wall
time); repeats, spread and load average come from ``timing.py``.

Run: python tests/benchmarks/bench_schedulers_ddpm_ddim.py [--repeats 15] [--steps 200] [--clock cpu|process|wall] [--tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

import diffusers
import torch

from diffkit_scheduler_ddim.ddim import DDIMScheduler
from diffkit_scheduler_ddpm.ddpm import DDPMScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    alternate,
    geometric_mean,
    per_call_args,
    print_floor,
    print_ratio,
    print_row,
    print_setup,
    print_table_header,
    randn_figure,
)

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
WIDTH = 28


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

    return alternate(ours, theirs, rounds, steps, warmup=20)


def main() -> None:
    args = per_call_args(__doc__, repeats=15, calls=200, warmup=20)
    print_setup(f"DDPM/DDIM scheduler step, 50-step plan, t = timesteps[25], {args.steps} calls per repeat", args)
    print_table_header(WIDTH)
    ratios = []
    for shape in SHAPES:
        floor = randn_figure(shape, args.repeats, args.steps)
        for name, ours_cls, ref_cls, config, step_kwargs in CASES:
            ours, ref = bench_case(ours_cls, ref_cls, config, step_kwargs, shape, args.repeats, args.steps)
            draws = ours_cls is DDPMScheduler or step_kwargs.get("eta", 0) > 0
            ratios.append(print_row(name, shape, ours, ref, WIDTH, floor if draws else None))
        print_floor(shape, floor, WIDTH)
    print_ratio(geometric_mean(ratios), f"per step: geometric mean of the {len(ratios)} cases' median ratios")


if __name__ == "__main__":
    main()

"""Benchmark: one ``scale_model_input`` + ``step`` of the k-diffusion schedulers, diffkit vs diffusers.

Schedulers: Euler, Euler ancestral, EDM Euler, Heun, LMS, KDPM2, KDPM2 ancestral. Each plans
once (30 steps) and then repeats one step from a fixed mid-schedule position, so the numbers
are the per-step cost only; the state is rewound before each repetition (the step index, and
for the two-stage samplers the stage, for LMS a full derivative history). Both libraries are
timed alternately in rounds within the same process and the median round is reported, which
keeps a busy machine from favouring either side. Stochastic samplers draw Gaussian noise per
step from the same generator in both libraries; that draw is timed alone as a shared floor and
a ratio without it is shown too.

The calling thread's CPU time with one torch thread is the default clock (``--clock wall`` for wall
time); repeats, spread and load average come from ``timing.py``.

Run: python tests/benchmarks/bench_schedulers_euler_family.py [--repeats 15] [--steps 200] [--clock cpu|process|wall] [--tiny]
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import diffusers
import torch

from diffkit_scheduler_euler.edm_euler import EDMEulerScheduler
from diffkit_scheduler_euler.euler import EulerDiscreteScheduler
from diffkit_scheduler_euler.euler_ancestral import EulerAncestralDiscreteScheduler
from diffkit_scheduler_heun.heun import HeunDiscreteScheduler
from diffkit_scheduler_kdpm2.kdpm2 import KDPM2DiscreteScheduler
from diffkit_scheduler_kdpm2.kdpm2_ancestral import KDPM2AncestralDiscreteScheduler
from diffkit_scheduler_lms.lms import LMSDiscreteScheduler

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

SHAPES = [(1, 4, 32, 32), (1, 4, 128, 128)]
SD = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}
# name, ours, theirs, config, step kwargs, index to step from, draws noise
CASES = [
    ("Euler", EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler, SD, {}, 10, False),
    (
        "Euler v-pred karras",
        EulerDiscreteScheduler,
        diffusers.EulerDiscreteScheduler,
        {**SD, "prediction_type": "v_prediction", "use_karras_sigmas": True},
        {},
        10,
        False,
    ),
    ("Euler s_churn", EulerDiscreteScheduler, diffusers.EulerDiscreteScheduler, SD, {"s_churn": 1.0}, 10, True),
    ("EulerAncestral", EulerAncestralDiscreteScheduler, diffusers.EulerAncestralDiscreteScheduler, SD, {}, 10, True),
    ("EDMEuler", EDMEulerScheduler, diffusers.EDMEulerScheduler, {}, {}, 10, False),
    ("Heun 1st stage", HeunDiscreteScheduler, diffusers.HeunDiscreteScheduler, SD, {}, 10, False),
    ("Heun 2nd stage", HeunDiscreteScheduler, diffusers.HeunDiscreteScheduler, SD, {}, 11, False),
    ("LMS order 4", LMSDiscreteScheduler, diffusers.LMSDiscreteScheduler, SD, {}, 10, False),
    ("KDPM2 1st stage", KDPM2DiscreteScheduler, diffusers.KDPM2DiscreteScheduler, SD, {}, 10, False),
    ("KDPM2 2nd stage", KDPM2DiscreteScheduler, diffusers.KDPM2DiscreteScheduler, SD, {}, 11, False),
    ("KDPM2A 2nd stage", KDPM2AncestralDiscreteScheduler, diffusers.KDPM2AncestralDiscreteScheduler, SD, {}, 11, True),
]
WIDTH = 22


def prime(step, scale, timesteps, index: int, sample, model_output, generator) -> None:
    """Walk a fresh run up to ``index`` so that the history and stage are what step ``index`` sees."""
    for t in timesteps[:index]:
        step(model_output, t, scale(sample, t), generator=generator)


def rewinder(target, index: int):
    """A function restoring the per-run attributes that one step changes (step index, stage, history)."""
    saved = {k: (list(v) if isinstance(v, list) else v) for k, v in vars(target).items() if not k.startswith("__")}
    names = [k for k in ("_step_index", "step_index", "sample", "dt", "prev_derivative", "derivatives") if k in saved]

    def rewind():
        for k in names:
            value = saved[k]
            object.__setattr__(target, k, list(value) if isinstance(value, list) else value)

    return rewind


def bench_case(ours_cls, ref_cls, config, step_kwargs, index, shape, rounds, steps):
    g = torch.Generator().manual_seed(0)
    sample, model_output = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    state = ours_cls(**config).plan(30)
    ref = ref_cls(**config)
    ref.set_timesteps(30)
    kw = {"generator": torch.Generator().manual_seed(1)}
    ref_kw = {"generator": torch.Generator().manual_seed(1)} if "generator" in ref.step.__code__.co_varnames else {}
    prime(
        lambda m, t, x, **k: state.step(m, t, x, **k),
        state.scale_model_input,
        state.timesteps,
        index,
        sample,
        model_output,
        kw["generator"],
    )
    prime(
        lambda m, t, x, **k: ref.step(m, t, x, **ref_kw),
        ref.scale_model_input,
        ref.timesteps,
        index,
        sample,
        model_output,
        None,
    )
    t_ours, t_ref = state.timesteps[index], ref.timesteps[index]
    rewind_ours, rewind_ref = rewinder(state, index), rewinder(ref, index)

    def ours():
        rewind_ours()
        state.step(model_output, t_ours, state.scale_model_input(sample, t_ours), **kw, **step_kwargs)

    def theirs():
        rewind_ref()
        ref.step(model_output, t_ref, ref.scale_model_input(sample, t_ref), **ref_kw, **step_kwargs)

    return alternate(ours, theirs, rounds, steps, warmup=20)


def main() -> None:
    args = per_call_args(__doc__, repeats=15, calls=200, warmup=20)
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    print_setup(f"Euler family scheduler step, 30-step plan, {args.steps} calls per repeat", args)
    print_table_header(WIDTH)
    ratios = []
    for shape in SHAPES:
        floor = randn_figure(shape, args.repeats, args.steps)
        for name, ours_cls, ref_cls, config, step_kwargs, index, draws in CASES:
            ours, ref = bench_case(ours_cls, ref_cls, config, step_kwargs, index, shape, args.repeats, args.steps)
            ratios.append(print_row(name, shape, ours, ref, WIDTH, floor if draws else None))
        print_floor(shape, floor, WIDTH)
    print_ratio(geometric_mean(ratios), f"per step: geometric mean of the {len(ratios)} cases' median ratios")


if __name__ == "__main__":
    main()

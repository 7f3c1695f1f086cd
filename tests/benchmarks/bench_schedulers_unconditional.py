"""Benchmark: the cost of one scheduler step, diffkit vs diffusers, for PNDM (PLMS), IPNDM, Score-SDE-VE
(predictor, corrector), Karras-VE (churn, Euler + Heun) and consistency models.

Multistep schedulers are first run a few steps so that each timed call is a full-order step,
and their step counters are put back before every call (in both libraries, so that the
bookkeeping costs the same); diffusers' IPNDM history, which otherwise grows without bound, is
trimmed to the four entries it uses. The two libraries alternate in rounds within one process
and the median round is reported. Cases that draw Gaussian noise are also shown without the
draw's cost (``ratio w/o randn``), a floor both libraries share.

The calling thread's CPU time with one torch thread is the default clock (``--clock wall`` for wall
time); repeats, spread and load average come from ``timing.py``.

Run: python tests/benchmarks/bench_schedulers_unconditional.py [--repeats 15] [--steps 200] [--clock cpu|process|wall] [--tiny]
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import diffusers
import torch
from diffusers.schedulers.deprecated.scheduling_karras_ve import KarrasVeScheduler as ReferenceKarrasVe

from diffkit_scheduler_consistency.cm_stochastic_iterative import CMStochasticIterativeScheduler
from diffkit_scheduler_karras_ve.karras_ve import KarrasVeScheduler
from diffkit_scheduler_pndm.ipndm import IPNDMScheduler
from diffkit_scheduler_pndm.pndm import PNDMScheduler
from diffkit_scheduler_score_sde_ve.score_sde_ve import ScoreSdeVeScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    Step,
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
WIDTH = 30

Pair = tuple[Step, Step]


def pndm_plms(config: dict, x: torch.Tensor, out: torch.Tensor) -> Pair:
    state = PNDMScheduler(**config).plan(50)
    ref = diffusers.PNDMScheduler(**config)
    ref.set_timesteps(50)
    for i in range(4):  # fill the history: later calls are fourth-order PLMS steps
        state.step(out, state.timesteps[i], x)
        ref.step(out, ref.timesteps[i], x)
    t_ours, t_ref = state.timesteps[25], ref.timesteps[25]
    return (lambda: state.step(out, t_ours, x)), (lambda: ref.step(out, t_ref, x))


def ipndm(x: torch.Tensor, out: torch.Tensor) -> Pair:
    state = IPNDMScheduler().plan(50)
    ref = diffusers.IPNDMScheduler()
    ref.set_timesteps(50)
    for i in range(4):
        state.step(out, state.timesteps[i], x)
        ref.step(out, ref.timesteps[i], x)
    t_ours, t_ref = state.timesteps[25], ref.timesteps[25]

    def ours():
        state.step_index = 25
        state.ets = state.ets[-3:]
        return state.step(out, t_ours, x)

    def theirs():
        ref._step_index = 25
        ref.ets = ref.ets[-3:]
        return ref.step(out, t_ref, x)

    return ours, theirs


def sde_ve(kind: str, x: torch.Tensor, out: torch.Tensor) -> Pair:
    state = ScoreSdeVeScheduler(num_train_timesteps=50).plan(50)
    ref = diffusers.ScoreSdeVeScheduler(num_train_timesteps=50)
    ref.set_timesteps(50)
    ref.set_sigmas(50)
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    if kind == "pred":
        t_ours, t_ref = state.timesteps[25], ref.timesteps[25]
        return (lambda: state.step_pred(out, t_ours, x, generator=g_ours)), (
            lambda: ref.step_pred(out, t_ref, x, generator=g_ref)
        )
    return (lambda: state.step_correct(out, x, generator=g_ours)), (lambda: ref.step_correct(out, x, generator=g_ref))


def karras_ve(kind: str, x: torch.Tensor, out: torch.Tensor) -> Pair:
    state = KarrasVeScheduler().plan(50)
    ref = ReferenceKarrasVe()
    ref.set_timesteps(50)
    sigma, sigma_ref = state.schedule[5], ref.schedule[5]  # σ = 1.3 lies in [s_min, s_max]: churned
    prev, prev_ref = state.schedule[4], ref.schedule[4]
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    if kind == "churn":
        return (lambda: state.add_noise_to_input(x, sigma, generator=g_ours)), (
            lambda: ref.add_noise_to_input(x, sigma_ref, generator=g_ref)
        )

    def ours():
        step = state.step(out, sigma, prev, x)
        return state.step_correct(out, sigma, prev, x, step.prev_sample, step.derivative)

    def theirs():
        step = ref.step(out, sigma_ref, prev_ref, x)
        return ref.step_correct(out, sigma_ref, prev_ref, x, step.prev_sample, step.derivative)

    return ours, theirs


def consistency(x: torch.Tensor, out: torch.Tensor) -> Pair:
    state = CMStochasticIterativeScheduler().plan(20)
    ref = diffusers.CMStochasticIterativeScheduler()
    ref.set_timesteps(20)
    t_ours, t_ref = state.timesteps[10], ref.timesteps[10]
    ref.is_scale_input_called = True
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)

    def ours():
        state.step_index = 10
        state.scale_model_input(x, t_ours)
        return state.step(out, t_ours, x, generator=g_ours)

    def theirs():
        ref._step_index = 10
        ref.scale_model_input(x, t_ref)
        return ref.step(out, t_ref, x, generator=g_ref)

    return ours, theirs


CASES: list[tuple[str, Callable[[torch.Tensor, torch.Tensor], Pair], bool]] = [
    ("PNDM PLMS", lambda x, o: pndm_plms({"skip_prk_steps": True}, x, o), False),
    ("PNDM PLMS v-pred", lambda x, o: pndm_plms({"skip_prk_steps": True, "prediction_type": "v_prediction"}, x, o), False),
    ("IPNDM", ipndm, False),
    ("ScoreSdeVe step_pred", lambda x, o: sde_ve("pred", x, o), True),
    ("ScoreSdeVe step_correct", lambda x, o: sde_ve("correct", x, o), True),
    ("KarrasVe add_noise_to_input", lambda x, o: karras_ve("churn", x, o), True),
    ("KarrasVe step + correct", lambda x, o: karras_ve("step", x, o), False),
    ("CM scale + step", consistency, True),
]


def main() -> None:
    args = per_call_args(__doc__, repeats=15, calls=200, warmup=20)
    print_setup(f"Unconditional-pipeline schedulers, one step, {args.steps} calls per repeat", args)
    print_table_header(WIDTH)
    ratios = []
    for shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x, out = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        floor = randn_figure(shape, args.repeats, args.steps)
        for name, make, draws in CASES:
            ours, ref = alternate(*make(x, out), args.repeats, args.steps, warmup=args.warmup)
            ratios.append(print_row(name, shape, ours, ref, WIDTH, floor if draws else None))
        print_floor(shape, floor, WIDTH)
    print_ratio(geometric_mean(ratios), f"per step: geometric mean of the {len(ratios)} cases' median ratios")


if __name__ == "__main__":
    main()

"""Benchmark: one scheduler step (+ ``scale_model_input``), diffkit vs diffusers, for LCM, TCD,
FlowMatch Euler/Heun, DDIMInverse, DDPMWuerstchen, UnCLIP and RePaint.

Each scheduler plans once and then steps repeatedly at one mid-schedule timestep; schedulers
that count their own steps get their step index (and Heun its predictor state) put back
before each step, on both sides, so the numbers are the per-step cost only. The libraries
alternate in rounds within one process and the median round is reported. Where a step draws
Gaussian noise, that draw is timed on its own too, as a floor both libraries share.
FlowMatch Heun is timed per predictor + corrector pair.

The calling thread's CPU time with one torch thread is the default clock (``--clock wall`` for wall
time); repeats, spread and load average come from ``timing.py``.

Run: python tests/benchmarks/bench_schedulers_misc_family.py [--repeats 15] [--steps 200] [--clock cpu|process|wall] [--tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

import diffusers
import torch

from diffkit_scheduler_ddim.ddim_inverse import DDIMInverseScheduler
from diffkit_scheduler_flowmatch.flow_match_euler import FlowMatchEulerDiscreteScheduler
from diffkit_scheduler_flowmatch.flow_match_heun import FlowMatchHeunDiscreteScheduler
from diffkit_scheduler_lcm.lcm import LCMScheduler
from diffkit_scheduler_lcm.tcd import TCDScheduler
from diffkit_scheduler_repaint.repaint import RePaintScheduler
from diffkit_scheduler_unclip.unclip import UnCLIPScheduler
from diffkit_scheduler_wuerstchen.wuerstchen import DDPMWuerstchenScheduler

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

SHAPES = [(1, 4, 32, 32), (1, 4, 128, 128)]
WIDTH = 28


def tensors(shape):
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def counted(ours_state, ref, index, sample, model_output, **kwargs) -> tuple[Step, Step]:
    """Step at ``timesteps[index]`` again and again, resetting the step counters."""
    t, rt = ours_state.timesteps[index], ref.timesteps[index]
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)

    def ours():
        ours_state.step_index = index
        x = ours_state.scale_model_input(sample, t)
        return ours_state.step(model_output, t, x, generator=g_ours, **kwargs)

    def theirs():
        ref._step_index = index
        x = ref.scale_model_input(sample, rt) if hasattr(ref, "scale_model_input") else sample
        return ref.step(model_output, rt, x, generator=g_ref, **kwargs)

    return ours, theirs


def lcm(shape):
    x, out = tensors(shape)
    state, ref = LCMScheduler().plan(4), diffusers.LCMScheduler()
    ref.set_timesteps(4)
    return counted(state, ref, 1, x, out)


def tcd(shape):
    x, out = tensors(shape)
    state, ref = TCDScheduler().plan(4), diffusers.TCDScheduler()
    ref.set_timesteps(4)
    return counted(state, ref, 1, x, out, eta=0.3)


def flow_euler(shape, **cfg):
    x, out = tensors(shape)
    state, ref = FlowMatchEulerDiscreteScheduler(shift=3.0, **cfg).plan(28), diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, **cfg)
    ref.set_timesteps(28)
    return counted(state, ref, 14, x, out)


def flow_euler_stochastic(shape):
    return flow_euler(shape, stochastic_sampling=True)


def flow_heun(shape):
    x, out = tensors(shape)
    state, ref = FlowMatchHeunDiscreteScheduler(shift=3.0).plan(14), diffusers.FlowMatchHeunDiscreteScheduler(shift=3.0)
    ref.set_timesteps(14)
    t1, t2, r1, r2 = state.timesteps[10], state.timesteps[11], ref.timesteps[10], ref.timesteps[11]

    def ours():
        state.step_index, state.dt = 10, None
        y = state.step(out, t1, x).prev_sample
        return state.step(out, t2, y)

    def theirs():
        ref._step_index, ref.dt = 10, None
        y = ref.step(out, r1, x).prev_sample
        return ref.step(out, r2, y)

    return ours, theirs


def ddim_inverse(shape):
    x, out = tensors(shape)
    cfg = {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "clip_sample": False}
    state, ref = DDIMInverseScheduler(**cfg).plan(50), diffusers.DDIMInverseScheduler(**cfg)
    ref.set_timesteps(50)
    t, rt = state.timesteps[25], ref.timesteps[25]
    return (
        lambda: state.step(out, t, state.scale_model_input(x, t)),
        lambda: ref.step(out, rt, ref.scale_model_input(x, rt)),
    )


def wuerstchen(shape):
    x, out = tensors(shape)
    state, ref = DDPMWuerstchenScheduler().plan(20), diffusers.DDPMWuerstchenScheduler()
    ref.set_timesteps(20)
    # as the Wuerstchen pipelines pass it: the time expanded over the batch
    t, rt = state.timesteps[10].expand(shape[0]), ref.timesteps[10].expand(shape[0])
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    return (
        lambda: state.step(out, t, state.scale_model_input(x, t), generator=g_ours),
        lambda: ref.step(out, rt, ref.scale_model_input(x, rt), generator=g_ref),
    )


def unclip(shape):
    x, out = tensors(shape)
    state, ref = UnCLIPScheduler().plan(25), diffusers.UnCLIPScheduler()
    ref.set_timesteps(25)
    t, prev, rt, rprev = state.timesteps[12], state.timesteps[13], ref.timesteps[12], ref.timesteps[13]
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    return (
        lambda: state.step(out, t, state.scale_model_input(x, t), prev_timestep=prev, generator=g_ours),
        lambda: ref.step(out, rt, ref.scale_model_input(x, rt), prev_timestep=rprev, generator=g_ref),
    )


def repaint(shape, eta=0.0):
    x, out = tensors(shape)
    original = torch.rand(shape, generator=torch.Generator().manual_seed(2)) * 2 - 1
    mask = (torch.rand(shape[0], 1, *shape[2:], generator=torch.Generator().manual_seed(3)) > 0.5).float()
    state, ref = RePaintScheduler().plan(50, 10, 10, eta=eta), diffusers.RePaintScheduler()
    ref.set_timesteps(50, 10, 10)
    ref.eta = eta
    t, rt = state.timesteps[25], ref.timesteps[25]
    g_ours, g_ref = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    return (
        lambda: state.step(out, t, state.scale_model_input(x, t), original, mask, g_ours),
        lambda: ref.step(out, rt, ref.scale_model_input(x, rt), original, mask, g_ref),
    )


def repaint_eta(shape):
    return repaint(shape, eta=0.5)


#: (name, case builder, random draws per step)
CASES = [
    ("LCM", lcm, 1),
    ("TCD eta=0.3", tcd, 1),
    ("FlowMatchEuler shift=3", flow_euler, 0),
    ("FlowMatchEuler stochastic", flow_euler_stochastic, 1),
    ("FlowMatchHeun (pair)", flow_heun, 0),
    ("DDIMInverse", ddim_inverse, 0),
    ("DDPMWuerstchen", wuerstchen, 1),
    ("UnCLIP", unclip, 1),
    ("RePaint eta=0", repaint, 1),
    ("RePaint eta=0.5", repaint_eta, 1),
]


def bench_case(build, shape, rounds, steps) -> tuple[float, float]:
    ours, theirs = build(shape)
    return alternate(ours, theirs, rounds, steps, warmup=10)


def main() -> None:
    args = per_call_args(__doc__, repeats=15, calls=200, warmup=10)
    print_setup(f"Other schedulers, one step, {args.steps} calls per repeat", args)
    print_table_header(WIDTH)
    ratios = []
    for shape in SHAPES:
        floor = randn_figure(shape, args.repeats, args.steps)
        for name, build, draws in CASES:
            ours, ref = bench_case(build, shape, args.repeats, args.steps)
            ratios.append(print_row(name, shape, ours, ref, WIDTH, floor.scaled(draws) if draws else None))
        print_floor(shape, floor, WIDTH)
    print_ratio(geometric_mean(ratios), f"per step: geometric mean of the {len(ratios)} cases' median ratios")


if __name__ == "__main__":
    main()

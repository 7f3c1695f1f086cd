"""Benchmark: one ``step`` (+ ``scale_model_input``) of the DPM-Solver family, DEIS and UniPC, diffkit vs diffusers.

Each scheduler plans 50 steps, takes the first steps so that the multistep history is full, and
then repeats one mid-schedule step (history, step index and lower-order counter restored before
each call), so the numbers are the per-step cost only. The two libraries alternate in rounds in
the same process and the median round is reported.

Run: python tests/benchmarks/bench_schedulers_dpmsolver_family.py [--repeats 7] [--steps 100] [--clock cpu|process|wall] [--tiny]
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import diffusers
import torch

from diffkit_scheduler_deis.deis import DEISMultistepScheduler
from diffkit_scheduler_dpmsolver.edm import EDMDPMSolverMultistepScheduler
from diffkit_scheduler_dpmsolver.multistep import DPMSolverMultistepScheduler
from diffkit_scheduler_dpmsolver.multistep_inverse import DPMSolverMultistepInverseScheduler
from diffkit_scheduler_dpmsolver.sde import DPMSolverSDEScheduler
from diffkit_scheduler_dpmsolver.singlestep import DPMSolverSinglestepScheduler
from diffkit_scheduler_unipc.unipc import UniPCMultistepScheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import (  # noqa: E402
    alternate,
    geometric_mean,
    per_call_args,
    print_ratio,
    print_row,
    print_setup,
    print_table_header,
)

warnings.filterwarnings("ignore")
SHAPES = [(1, 4, 32, 32), (1, 4, 128, 128)]
CASES = [
    ("DPM++ 2M", DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler, {}),
    ("DPM++ 3M", DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler, {"solver_order": 3}),
    ("DPM++ 2M SDE", DPMSolverMultistepScheduler, diffusers.DPMSolverMultistepScheduler, {"algorithm_type": "sde-dpmsolver++"}),
    ("DPM++ 2S single", DPMSolverSinglestepScheduler, diffusers.DPMSolverSinglestepScheduler, {}),
    ("DPM++ 2M inverse", DPMSolverMultistepInverseScheduler, diffusers.DPMSolverMultistepInverseScheduler, {}),
    ("EDM DPM++ 2M", EDMDPMSolverMultistepScheduler, diffusers.EDMDPMSolverMultistepScheduler, {}),
    ("DEIS 2", DEISMultistepScheduler, diffusers.DEISMultistepScheduler, {}),
    ("UniPC bh2 2", UniPCMultistepScheduler, diffusers.UniPCMultistepScheduler, {}),
    ("UniPC bh2 3", UniPCMultistepScheduler, diffusers.UniPCMultistepScheduler, {"solver_order": 3}),
    ("DPM++ SDE (tree)", DPMSolverSDEScheduler, diffusers.DPMSolverSDEScheduler, {"noise_sampler_seed": 0}),
]
WIDTH = 20
_STATE_KEYS = ("_step_index", "step_index", "lower_order_nums", "model_outputs", "last_sample", "this_order", "sample",
               "timestep_list", "mid_point_sigma")


def _snapshot(obj) -> dict:
    return {k: (list(v) if isinstance(v, list) else v) for k, v in vars(obj).items() if k in _STATE_KEYS}


def _restore(obj, snap: dict) -> None:
    for k, v in snap.items():
        object.__setattr__(obj, k, list(v) if isinstance(v, list) else v)


def bench_case(ours_cls, ref_cls, config, shape, rounds, steps):
    g = torch.Generator().manual_seed(0)
    sample, model_output = torch.randn(shape, generator=g), torch.randn(shape, generator=g) * 0.1
    state = ours_cls(**config).plan(50)
    ref = ref_cls(**config)
    ref.set_timesteps(50)
    k = 25 if ours_cls is not DPMSolverSDEScheduler else 24  # the SDE one: a first-order stage
    for i in range(k):  # fill the histories the same way
        state.step(model_output, state.timesteps[i], sample)
        ref.step(model_output, ref.timesteps[i], sample)
    t_ours, t_ref = state.timesteps[k], ref.timesteps[k]
    snap_ours, snap_ref = _snapshot(state), _snapshot(ref)
    if hasattr(state, "noise_sampler"):
        state.noise_sampler, ref.noise_sampler = state.noise_sampler, ref.noise_sampler

    def ours():
        _restore(state, snap_ours)
        state.step(model_output, t_ours, state.scale_model_input(sample, t_ours))

    def theirs():
        _restore(ref, snap_ref)
        ref.step(model_output, t_ref, ref.scale_model_input(sample, t_ref))

    return alternate(ours, theirs, rounds, steps, warmup=5)


def main() -> None:
    args = per_call_args(__doc__, repeats=7, calls=100, warmup=5)
    print_setup(
        f"DPM-Solver family, 50-step plan, one mid-schedule step + scale_model_input, {args.steps} calls per repeat",
        args,
    )
    print_table_header(WIDTH, randn_column=False)
    ratios = []
    for shape in SHAPES:
        for name, ours_cls, ref_cls, config in CASES:
            ours, ref = bench_case(ours_cls, ref_cls, config, shape, args.repeats, args.steps)
            ratios.append(print_row(name, shape, ours, ref, WIDTH))
    print_ratio(geometric_mean(ratios), f"per step: geometric mean of the {len(ratios)} cases' median ratios")


if __name__ == "__main__":
    main()

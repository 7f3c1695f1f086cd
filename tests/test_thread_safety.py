"""One pipeline object, eight threads at once: every result equals the same call run alone.

diffusers keeps per-call scheduler state on the scheduler (its issues #3672, #5749, #7851,
#9362); diffkit keeps it in the state object that ``plan()`` returns, and pipelines keep none
on ``self``. Threads here share one UNet and, for the same family, one scheduler object.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from diffkit import registry

TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=4,
)

#: (scheduler class, config overrides): several families, stochastic ones included
FAMILIES = [
    ("DDPMScheduler", {}),
    ("DDIMScheduler", {}),
    ("PNDMScheduler", {"skip_prk_steps": True}),
    ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    ("UniPCMultistepScheduler", {}),
    ("EulerAncestralDiscreteScheduler", {}),
    ("EulerDiscreteScheduler", {"use_karras_sigmas": True}),
    ("DEISMultistepScheduler", {}),
]


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    """One DDPMPipeline per scheduler family, all sharing the same UNet object."""
    from diffkit_models_unet.unet_2d import UNet2DModel
    from diffkit_pipeline_ddpm.pipeline import DDPMPipeline

    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET).eval()
    base = registry.get("scheduler", "DDPMScheduler")(num_train_timesteps=1000)
    out = []
    for name, overrides in FAMILIES:
        if not registry.has("scheduler", name):
            pytest.skip(f"{name} is not installed")
        scheduler = registry.get("scheduler", name).from_config(base.config, **overrides)
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
        pipe.set_progress_bar_config(disable=True)
        out.append(pipe)
    return out


def _call(pipe, seed: int) -> np.ndarray:
    return pipe(generator=torch.Generator().manual_seed(seed), num_inference_steps=6, output_type="np").images


def test_eight_threads_match_sequential_runs(pipelines):
    # Two threads per pipeline object for four of the families: the very same object and
    # scheduler serve concurrent calls with different seeds.
    jobs = [(pipelines[i % len(pipelines)], 100 + i) for i in range(8)]
    jobs += [(pipelines[0], 300), (pipelines[3], 301)]
    expected = [_call(pipe, seed) for pipe, seed in jobs]

    results: list[np.ndarray | BaseException | None] = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(index: int) -> None:
        pipe, seed = jobs[index]
        try:
            barrier.wait()
            results[index] = _call(pipe, seed)
        except BaseException as exc:  # reported below with the job that raised
            results[index] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for (pipe, seed), got, want in zip(jobs, results, expected, strict=True):
        assert not isinstance(got, BaseException), f"{type(pipe.scheduler).__name__} seed {seed}: {got!r}"
        assert got is not None, f"{type(pipe.scheduler).__name__} seed {seed} did not finish"
        np.testing.assert_array_equal(got, want, err_msg=f"{type(pipe.scheduler).__name__} seed {seed}")
    # the shared scheduler objects were not touched by the calls
    assert all(p.scheduler.num_inference_steps is None for p in pipelines)


def test_interleaved_states_of_one_scheduler_are_independent(pipelines):
    scheduler = pipelines[3].scheduler  # DPM-Solver++ SDE: multistep history and noise
    sample = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(states, seeds):
        xs = [sample.clone() for _ in states]
        gens = [torch.Generator().manual_seed(seed) for seed in seeds]
        for t_index in range(len(states[0].timesteps)):
            for k, state in enumerate(states):
                t = state.timesteps[t_index]
                xs[k] = state.step(0.1 * xs[k], t, xs[k], generator=gens[k]).prev_sample
        return xs

    together = run([scheduler.plan(5), scheduler.plan(5)], seeds=[0, 1])
    first_alone = run([scheduler.plan(5)], seeds=[0])[0]
    second_alone = run([scheduler.plan(5)], seeds=[1])[0]
    torch.testing.assert_close(together[0], first_alone, rtol=0, atol=0)
    torch.testing.assert_close(together[1], second_alone, rtol=0, atol=0)
    assert not torch.equal(first_alone, second_alone)


def test_one_stable_diffusion_pipeline_serves_eight_threads(tmp_path):
    """Different prompts, seeds, step counts and guidance scales at once: each equals its sequential run."""
    pytest.importorskip("diffusers")
    pytest.importorskip("transformers")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent / "parity"))
    from sd_checkpoints import build_diffusers_sd

    from diffkit import DiffusionPipeline

    build_diffusers_sd(tmp_path / "sd")
    pipe = DiffusionPipeline.from_pretrained(tmp_path / "sd")
    # Euler ancestral: the scheduler state holds sigmas and a step index, and each step draws noise
    pipe.scheduler = registry.get("scheduler", "EulerAncestralDiscreteScheduler").from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    prompts = ["a photo of a cat", "a red dog", "an astronaut riding a horse", "a small house",
               "a blue sky", "two cats " * 60, "a painting of the moon", "a big green tree"]
    # the long prompt is tokenized untruncated too (to name what is cut) while others tokenize truncated
    jobs = [
        dict(prompt=prompts[i], seed=10 + i, steps=2 + i % 3, scale=(1.0, 3.0, 7.5, 12.0)[i % 4],
             negative=("blurry" if i % 2 else None))
        for i in range(8)
    ]

    def call(job: dict) -> np.ndarray:
        return pipe(
            job["prompt"], negative_prompt=job["negative"], num_inference_steps=job["steps"],
            guidance_scale=job["scale"], height=32, width=32, output_type="np",
            generator=torch.Generator().manual_seed(job["seed"]),
        ).images

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        expected = [call(job) for job in jobs]
        results: list[np.ndarray | BaseException | None] = [None] * len(jobs)
        barrier = threading.Barrier(len(jobs))

        def work(index: int) -> None:
            try:
                barrier.wait()
                results[index] = call(jobs[index])
            except BaseException as exc:  # reported below with the job that raised
                results[index] = exc

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    finally:
        torch.set_num_threads(threads_before)
    for job, got, want in zip(jobs, results, expected, strict=True):
        assert not isinstance(got, BaseException), f"{job}: {got!r}"
        assert got is not None, f"{job} did not finish"
        np.testing.assert_array_equal(got, want, err_msg=str(job))
    assert len({float(e.sum()) for e in expected}) == len(jobs)  # the jobs really differ

"""The text-to-image demo draws the digit its prompt names, classifier-free guidance is what makes it
do so, and diffusers loads the shipped folder and draws the same images.

A classifier (the DDPM demo's RBF SVM with calibrated probabilities, shared through
``diffkit_pretrained_ddpm_digits.quality``) is trained here on scikit-learn's digits, preprocessed
exactly as the demo's training data (``training.json`` says how), and judges images decoded at the
demo's resolution. For each digit 0-9, 16 images of "the digit <word>" with DDIM in 25 steps: with
guidance 5 (the recommended call) at least 80 % must be classified as the prompted digit with a
probability of at least 0.8; without guidance (1) that share must be clearly lower; a prompt that
names no digit must spread the classes (none above 40 %). The DDPM demo's quality test checks that
the same classifier rejects noise, blurs and blends of two digits.
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn  # noqa: F401  (requirements-test.txt; a missing classifier must fail, not skip)
import torch

from diffkit import DiffusionPipeline, registry
from diffkit_pretrained_ddpm_digits.quality import training_record
from diffkit_pretrained_tiny_sd_digits import CHECKPOINT, NAME, RECOMMENDED_CALL, digit_prompt
from diffkit_pretrained_tiny_sd_digits.quality import (
    MAX_CLASS_SHARE_WITHOUT_DIGIT,
    MIN_HIT_FRACTION,
    PromptedVerdict,
    class_shares,
    classifier,
    draw_every_digit,
)

SEED = 0
PER_DIGIT = 16
#: "clearly lower": without guidance the hit fraction is at least this much below the guided one
GUIDANCE_GAIN = 0.1
NO_DIGIT_PROMPT = "a handwritten digit"
ATOL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def judge():
    return classifier(seed=SEED)


@pytest.fixture(scope="module")
def pipe():
    pipe = DiffusionPipeline.from_pretrained(NAME)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _verdict(pipe, judge, guidance: float) -> PromptedVerdict:
    call = {**RECOMMENDED_CALL, "guidance_scale": guidance}
    images, wanted = draw_every_digit(pipe, PER_DIGIT, seed=SEED, **call)
    assert images.shape == (10 * PER_DIGIT, judge.resolution, judge.resolution, 1)
    return PromptedVerdict.judge(judge, images, wanted)


@pytest.fixture(scope="module")
def guided(pipe, judge) -> PromptedVerdict:
    return _verdict(pipe, judge, RECOMMENDED_CALL["guidance_scale"])


def test_the_classifier_sees_what_the_model_was_trained_on(judge, pipe):
    record = training_record(CHECKPOINT)
    assert judge.resolution == record["data"]["resolution"] == pipe.vae.config.sample_size
    assert record["data"]["source"] == "sklearn.datasets.load_digits"
    assert judge.held_out_accuracy >= 0.95


def test_guided_prompts_draw_the_digit_they_name(guided):
    assert guided.hit_fraction >= MIN_HIT_FRACTION, f"{guided.summary()}\n{guided.confusion()}"


def test_classifier_free_guidance_is_what_makes_the_digits_right(pipe, judge, guided):
    unguided = _verdict(pipe, judge, 1.0)
    assert unguided.hit_fraction <= guided.hit_fraction - GUIDANCE_GAIN, (
        f"guidance 5: {guided.summary()}; guidance 1: {unguided.summary()}"
    )


def test_a_prompt_that_names_no_digit_spreads_the_classes(pipe, judge):
    images = pipe(
        prompt=NO_DIGIT_PROMPT, num_images_per_prompt=4 * PER_DIGIT, generator=torch.Generator().manual_seed(SEED),
        output_type="np", **RECOMMENDED_CALL,
    ).images
    shares = class_shares(judge, images)
    assert shares.max() <= MAX_CLASS_SHARE_WITHOUT_DIGIT, np.round(shares, 2)
    assert np.count_nonzero(shares) >= 5, np.round(shares, 2)


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DPMSolverMultistepScheduler"])
def test_diffusers_loads_the_shipped_folder_and_draws_the_same_images(scheduler):
    """float16 weights loaded as float32 on both sides; DDIM (the recommended sampler) and DPM++ 2M."""
    diffusers = pytest.importorskip("diffusers")
    reference = diffusers.StableDiffusionPipeline.from_pretrained(CHECKPOINT, torch_dtype=torch.float32)
    pipe = DiffusionPipeline.from_pretrained(NAME, torch_dtype=torch.float32)
    reference.scheduler = getattr(diffusers, scheduler).from_config(reference.scheduler.config)
    pipe.scheduler = registry.get("scheduler", scheduler).from_config(dict(reference.scheduler.config))
    for p in (reference, pipe):
        p.set_progress_bar_config(disable=True)
        assert p.unet.dtype == torch.float32 and p.text_encoder.dtype == torch.float32
    call = {"prompt": [digit_prompt(7), "a thick 3"], "num_images_per_prompt": 2, "output_type": "np",
            **RECOMMENDED_CALL}
    expected = reference(generator=torch.Generator().manual_seed(SEED), **call).images
    got = pipe(generator=torch.Generator().manual_seed(SEED), **call).images
    assert got.shape == expected.shape == (4, 16, 16, 1)
    assert np.abs(got - expected).max() <= ATOL

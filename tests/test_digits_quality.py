"""The embedded demo model draws digits that a good classifier recognises.

A classifier (an RBF SVM with calibrated probabilities) is trained here on scikit-learn's digits,
preprocessed exactly as the demo's training data was (``training.json`` in the checkpoint says
how). It labels 64 images that the demo generates with DDIM in 50 steps: at least 80 % must get
a top-class probability of at least 0.8, and at least 9 of the 10 digits must appear. So that the
bar cannot pass by accident, the classifier must be accurate on held-out digits and must reject
images that are not digits (noise, blurs, blends of two digits).
"""

from __future__ import annotations

import numpy as np
import pytest
import sklearn  # noqa: F401  (requirements-test.txt; a missing classifier must fail, not skip)
import torch

from diffkit import DiffusionPipeline, registry
from diffkit_pretrained_ddpm_digits import CHECKPOINT, NAME
from diffkit_pretrained_ddpm_digits.quality import (
    MIN_CONFIDENT_FRACTION,
    MIN_DIGITS_PRESENT,
    DigitClassifier,
    digits_images,
    training_record,
)

SEED = 0
NUM_IMAGES = 64
STEPS = 50


@pytest.fixture(scope="module")
def classifier() -> DigitClassifier:
    return DigitClassifier.for_checkpoint(CHECKPOINT)


@pytest.fixture(scope="module")
def ddim_images() -> np.ndarray:
    base = DiffusionPipeline.from_pretrained(NAME)
    pipe = registry.get("pipeline", "DDIMPipeline")(**base.components)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(SEED)
    return pipe(batch_size=NUM_IMAGES, num_inference_steps=STEPS, generator=generator, output_type="np").images


def test_the_classifier_sees_what_the_model_was_trained_on(classifier):
    record = training_record(CHECKPOINT)
    unet_size = DiffusionPipeline.from_pretrained(NAME).unet.config.sample_size
    assert classifier.resolution == record["data"]["resolution"] == unet_size
    assert record["data"]["source"] == "sklearn.datasets.load_digits"
    assert classifier.held_out_accuracy >= 0.95


def test_the_classifier_rejects_what_is_not_a_digit(classifier):
    rng = np.random.default_rng(SEED)
    size = classifier.resolution
    images, labels = digits_images(size, training_record(CHECKPOINT)["data"]["upsample_mode"])
    real = images.numpy()
    first = rng.integers(0, len(real), NUM_IMAGES)
    second = np.array([rng.choice(np.flatnonzero(labels != labels[i])) for i in first])
    coarse = torch.nn.functional.interpolate(torch.rand(NUM_IMAGES, 1, 4, 4), size=size, mode="bilinear")
    not_digits = {
        "uniform noise": rng.random((NUM_IMAGES, 1, size, size)),
        "blurred noise": coarse.numpy(),
        "blends of two different digits": (real[first] + real[second]) / 2,
        "blank": np.zeros((NUM_IMAGES, 1, size, size)),
    }
    for what, batch in not_digits.items():
        verdict = classifier.judge(batch)
        assert not verdict.passes(), f"{what} passed the bar: {verdict.summary()}"
        assert verdict.confident_fraction < 0.5, f"{what}: {verdict.summary()}"
    # while real digits pass easily
    assert classifier.judge(real[first]).passes()


def test_ddim_50_steps_draws_recognisable_digits(classifier, ddim_images):
    assert ddim_images.shape == (NUM_IMAGES, classifier.resolution, classifier.resolution, 1)
    verdict = classifier.judge(ddim_images)
    assert verdict.confident_fraction >= MIN_CONFIDENT_FRACTION, verdict.summary()
    assert len(verdict.digits_present) >= MIN_DIGITS_PRESENT, f"{verdict.summary()} counts {verdict.counts}"

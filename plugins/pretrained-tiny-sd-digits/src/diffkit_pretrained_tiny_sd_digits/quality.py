"""Does the demo draw the digit its prompt names? The digit classifier of the DDPM demo judges it.

The classifier and the data preprocessing are shared with ``diffkit/ddpm-digits``
(``diffkit_pretrained_ddpm_digits.quality``): an RBF SVM with calibrated probabilities, trained on
scikit-learn's digits preprocessed exactly as this checkpoint's training data (``training.json``).
An image counts as a hit when the classifier gives the prompted digit the top class with a
probability of at least 0.8. Needs scikit-learn and ``diffkit-pretrained-ddpm-digits`` (the
``quality`` extra).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from diffkit_pretrained_ddpm_digits.quality import CONFIDENCE, DigitClassifier

from . import CHECKPOINT, digit_prompt

#: the issue's bar with guidance: share of hits over all digits
MIN_HIT_FRACTION = 0.8
#: a prompt that names no digit must not favour one: no class above this share of the images
MAX_CLASS_SHARE_WITHOUT_DIGIT = 0.4


def classifier(seed: int = 0) -> DigitClassifier:
    """The digit classifier at this checkpoint's resolution and preprocessing."""
    return DigitClassifier.for_checkpoint(CHECKPOINT, seed=seed)


def draw_every_digit(pipe: Any, per_digit: int, seed: int = 0, **call: Any) -> tuple[np.ndarray, np.ndarray]:
    """``per_digit`` images of ``"the digit <word>"`` for each digit 0-9 in one call (seeded generator).

    Returns the images (``NHWC`` in [0, 1]) and the prompted digit of each.
    """
    import torch

    prompts = [digit_prompt(d) for d in range(10)]
    generator = torch.Generator().manual_seed(seed)
    images = pipe(prompt=prompts, num_images_per_prompt=per_digit, generator=generator, output_type="np", **call)
    return images.images, np.repeat(np.arange(10), per_digit)


@dataclasses.dataclass
class PromptedVerdict:
    """The classifier's opinion of images drawn for known digits."""

    wanted: np.ndarray  # the prompted digit of each image
    labels: np.ndarray  # the classifier's top class
    confidence: np.ndarray  # its probability
    threshold: float = CONFIDENCE

    @classmethod
    def judge(cls, judge: DigitClassifier, images: Any, wanted: np.ndarray) -> PromptedVerdict:
        proba = judge.probabilities(images)
        classes = np.asarray(judge.model.classes_)
        return cls(np.asarray(wanted), classes[proba.argmax(axis=1)], proba.max(axis=1))

    @property
    def hits(self) -> np.ndarray:
        """Images labelled as their prompted digit with probability ≥ ``threshold``."""
        return (self.labels == self.wanted) & (self.confidence >= self.threshold)

    @property
    def hit_fraction(self) -> float:
        return float(self.hits.mean())

    @property
    def hits_per_digit(self) -> list[int]:
        return [int(self.hits[self.wanted == d].sum()) for d in range(10)]

    def confusion(self) -> np.ndarray:
        """``(10, 10)`` counts: row = prompted digit, column = the classifier's top class (any confidence)."""
        matrix = np.zeros((10, 10), dtype=int)
        np.add.at(matrix, (self.wanted, self.labels), 1)
        return matrix

    def summary(self) -> str:
        return f"{self.hit_fraction:.0%} of {len(self.wanted)} hits; per digit 0-9: {self.hits_per_digit}"


def class_shares(judge: DigitClassifier, images: Any) -> np.ndarray:
    """Share of ``images`` whose top class is each digit 0-9 (any confidence)."""
    proba = judge.probabilities(images)
    labels = np.asarray(judge.model.classes_)[proba.argmax(axis=1)]
    return np.bincount(labels, minlength=10) / len(labels)

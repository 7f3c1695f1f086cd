"""How good are the demo's digits? A classifier trained on scikit-learn's digits judges them.

The data preprocessing lives here once, so that the training script
(``docs/examples/train_ddpm_digits.py``), the quality test and the report script see the
digits exactly as the model was trained on them. The classifier is an RBF support-vector
machine with Platt-scaled probabilities: unlike logistic regression or an MLP, it is not
confident about noise, blurs or blends of two digits, so a high confident fraction cannot
come from images that merely have some ink in them.

Needs scikit-learn (the ``quality`` extra); importing this module needs only numpy and torch.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import CHECKPOINT

#: the bar of the issue: share of images with a top-class probability of at least CONFIDENCE
CONFIDENCE = 0.8
MIN_CONFIDENT_FRACTION = 0.8
MIN_DIGITS_PRESENT = 9


def training_record(checkpoint: str | Path = CHECKPOINT) -> dict[str, Any]:
    """The ``training.json`` that the training script wrote beside the checkpoint."""
    return json.loads((Path(checkpoint) / "training.json").read_text())


def digits_images(resolution: int = 8, mode: str = "bilinear") -> tuple[Any, np.ndarray]:
    """scikit-learn's 1797 digits as a float tensor ``(N, 1, resolution, resolution)`` in [0, 1], and labels.

    The 8×8 images (values 0..16) are divided by 16 and resized with
    ``torch.nn.functional.interpolate(mode=mode, align_corners=False)``.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    if resolution != images.shape[-1]:
        images = F.interpolate(images, size=(resolution, resolution), mode=mode, align_corners=False)
    return images.clamp(0.0, 1.0), np.asarray(digits.target)


def as_batch(images: Any) -> np.ndarray:
    """Grey images as a float array ``(N, H*W)`` in [0, 1].

    Accepts a list of PIL images, a numpy array ``NHWC``/``NCHW``/``NHW`` in [0, 1] (a
    pipeline's ``output_type="np"``) or a torch tensor of the same shapes.
    """
    if isinstance(images, (list, tuple)):
        return np.stack([np.asarray(im.convert("L"), dtype=np.float32).reshape(-1) / 255.0 for im in images])
    array = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=np.float32)
    if array.ndim == 4:
        if array.shape[-1] == 1:
            array = array[..., 0]
        elif array.shape[1] == 1:
            array = array[:, 0]
        else:
            raise ValueError(f"expected grey images with one channel, got shape {array.shape}")
    if array.ndim != 3:
        raise ValueError(f"expected a batch of images (N, H, W[, 1]), got shape {array.shape}")
    return array.reshape(array.shape[0], -1)


def clear_digits(images: Any, labels: np.ndarray, threshold: float, seed: int) -> Any:
    """A boolean tensor marking the unambiguous digits: a 5-fold cross-validated SVM (each image judged
    by a model that did not see it) gives their own label a probability of at least ``threshold``.

    The demos' training scripts drop the ambiguous few (about 7 % of the set at 0.8), so that the
    models draw clear digits instead of reproducing scribbles that could be either of two.
    """
    import torch
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.svm import SVC

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # SVC(probability=True) is deprecated in scikit-learn 1.9
        proba = cross_val_predict(
            SVC(probability=True, random_state=seed),
            as_batch(images),
            labels,
            cv=StratifiedKFold(5, shuffle=True, random_state=seed),
            method="predict_proba",
        )
    own = proba[range(len(labels)), labels]
    return torch.from_numpy(own >= threshold)


@dataclasses.dataclass
class Verdict:
    """The classifier's opinion of a batch of generated images."""

    labels: np.ndarray  # the top class of each image
    confidence: np.ndarray  # its probability
    threshold: float = CONFIDENCE

    @property
    def confident_fraction(self) -> float:
        """Share of images whose top-class probability is at least ``threshold``."""
        return float(np.mean(self.confidence >= self.threshold))

    @property
    def digits_present(self) -> list[int]:
        """The digits that at least one confidently labelled image shows."""
        return sorted({int(d) for d in self.labels[self.confidence >= self.threshold]})

    @property
    def counts(self) -> dict[int, int]:
        """How many confidently labelled images show each digit."""
        confident = self.labels[self.confidence >= self.threshold]
        return {d: int(np.sum(confident == d)) for d in range(10)}

    def passes(self, min_fraction: float = MIN_CONFIDENT_FRACTION, min_digits: int = MIN_DIGITS_PRESENT) -> bool:
        """The issue's bar: enough confident images and enough different digits among them."""
        return self.confident_fraction >= min_fraction and len(self.digits_present) >= min_digits

    def summary(self) -> str:
        return (
            f"{self.confident_fraction:.0%} of {len(self.labels)} images with p >= {self.threshold}; "
            f"digits present: {len(self.digits_present)}/10 {self.digits_present}"
        )


class DigitClassifier:
    """An SVM on scikit-learn's digits at one resolution, with its held-out accuracy."""

    def __init__(self, model: Any, resolution: int, held_out_accuracy: float) -> None:
        self.model = model
        self.resolution = resolution
        self.held_out_accuracy = held_out_accuracy

    @classmethod
    def fit(cls, resolution: int, mode: str = "bilinear", seed: int = 0, held_out: float = 0.25) -> DigitClassifier:
        """Train on a stratified ``1 - held_out`` share of the digits, measure accuracy on the rest."""
        from sklearn.model_selection import train_test_split
        from sklearn.svm import SVC

        images, labels = digits_images(resolution, mode)
        features = as_batch(images)
        x_train, x_test, y_train, y_test = train_test_split(
            features, labels, test_size=held_out, random_state=seed, stratify=labels
        )
        with warnings.catch_warnings():
            # scikit-learn 1.9 deprecates `probability`; its pairwise-coupled probabilities are the
            # ones that stay low on non-digits, which is what this judge needs (removed in 1.11)
            warnings.simplefilter("ignore", FutureWarning)
            model = SVC(probability=True, random_state=seed).fit(x_train, y_train)
        accuracy = float(np.mean(model.predict(x_test) == y_test))
        return cls(model, resolution, accuracy)

    @classmethod
    def for_checkpoint(cls, checkpoint: str | Path = CHECKPOINT, seed: int = 0) -> DigitClassifier:
        """A classifier that sees the digits exactly as the checkpoint's training data (``training.json``)."""
        data = training_record(checkpoint)["data"]
        return cls.fit(int(data["resolution"]), data["upsample_mode"], seed=seed)

    def probabilities(self, images: Any) -> np.ndarray:
        """``(N, 10)`` class probabilities of images in [0, 1] at this classifier's resolution."""
        features = as_batch(images)
        if features.shape[1] != self.resolution**2:
            side = int(round(features.shape[1] ** 0.5))
            raise ValueError(f"images are {side}x{side}; this classifier expects {self.resolution}x{self.resolution}")
        return np.asarray(self.model.predict_proba(features))

    def judge(self, images: Any, threshold: float = CONFIDENCE) -> Verdict:
        """Label each image and keep its top-class probability."""
        proba = self.probabilities(images)
        classes = np.asarray(self.model.classes_)
        return Verdict(labels=classes[proba.argmax(axis=1)], confidence=proba.max(axis=1), threshold=threshold)


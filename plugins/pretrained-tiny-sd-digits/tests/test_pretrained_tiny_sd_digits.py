"""The package registers its checkpoint with the recommended sampler; the verdict counts what it should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import diffkit_pretrained_tiny_sd_digits as package
from diffkit import registry
from diffkit.hookspecs import PretrainedDefaults
from diffkit.testing import plugin
from diffkit_pretrained_tiny_sd_digits import hooks
from diffkit_pretrained_tiny_sd_digits.quality import PromptedVerdict


def test_hook_registers_the_checkpoint_folder_with_ddim_25_steps_guidance_5(diffkit_registry):
    with plugin(hooks, dist="diffkit-pretrained-tiny-sd-digits"):
        assert registry.names("pretrained") == ["diffkit/tiny-sd-digits"]
        assert registry.get("pretrained", "diffkit/tiny-sd-digits") == package.CHECKPOINT
        entry = registry.entry("pretrained", "diffkit/tiny-sd-digits")
        recommended = PretrainedDefaults.from_meta(entry.name, entry.dist, entry.meta)
    assert recommended == PretrainedDefaults("DDIMScheduler", {"num_inference_steps": 25, "guidance_scale": 5.0})
    assert package.CHECKPOINT == Path(hooks.__file__).resolve().parent / "tiny-sd-digits"
    assert (package.CHECKPOINT / "model_index.json").is_file()


def test_digit_prompt_names_the_digit_as_a_word():
    assert package.digit_prompt(0) == "the digit zero" and package.digit_prompt(7) == "the digit seven"
    with pytest.raises(IndexError):
        package.digit_prompt(10)


def test_prompted_verdict_counts_confident_right_labels_as_hits():
    wanted = np.array([0, 0, 1, 1, 2, 2])
    labels = np.array([0, 3, 1, 1, 2, 2])
    confidence = np.array([0.9, 0.95, 0.8, 0.79, 1.0, 0.85])
    verdict = PromptedVerdict(wanted, labels, confidence)
    assert verdict.hits.tolist() == [True, False, True, False, True, True]
    assert verdict.hit_fraction == pytest.approx(4 / 6)
    assert verdict.hits_per_digit == [1, 1, 2, 0, 0, 0, 0, 0, 0, 0]
    confusion = verdict.confusion()
    assert confusion.sum() == 6 and confusion[0, 3] == 1 and confusion[1, 1] == 2 and confusion[2, 2] == 2

"""The package registers its checkpoint by name; the quality helpers count what they should."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import diffkit_pretrained_ddpm_digits as package
from diffkit import registry
from diffkit.testing import plugin
from diffkit_pretrained_ddpm_digits import hooks
from diffkit_pretrained_ddpm_digits.quality import Verdict, as_batch


def test_hook_registers_the_checkpoint_folder(diffkit_registry):
    with plugin(hooks, dist="diffkit-pretrained-ddpm-digits"):
        assert registry.names("pretrained") == ["diffkit/ddpm-digits"]
        assert registry.get("pretrained", "diffkit/ddpm-digits") == package.CHECKPOINT
    assert package.CHECKPOINT == Path(hooks.__file__).resolve().parent / "ddpm-digits"
    assert (package.CHECKPOINT / "model_index.json").is_file()


def test_generate_runs_the_recommended_ddim_50_steps(tmp_path, capsys):
    """Without --scheduler/--steps, the demo samples as its quality test does, not with 1000 DDPM steps."""
    from diffkit import cli
    from diffkit.hookspecs import PretrainedDefaults

    entry = registry.entry("pretrained", "diffkit/ddpm-digits")
    recommended = PretrainedDefaults.from_meta(entry.name, entry.dist, entry.meta)
    assert recommended == PretrainedDefaults("DDIMScheduler", {"num_inference_steps": 50})
    assert cli.main(["generate", "diffkit/ddpm-digits", "--seed", "0", "--output", str(tmp_path / "d.png")]) == 0
    out, err = capsys.readouterr()
    assert "DDPMPipeline with DDIMScheduler, 50 steps (recommended)" in out
    assert "50/50" in err and "/1000" not in err


def test_info_shows_the_recommendation(capsys):
    import json

    from diffkit import cli

    assert cli.main(["info", "diffkit/ddpm-digits"]) == 0
    assert "recommended: DDIMScheduler, num_inference_steps=50" in capsys.readouterr().out
    assert cli.main(["info", "diffkit/ddpm-digits", "--json"]) == 0
    recommended = json.loads(capsys.readouterr().out)["recommended"]
    assert recommended == {"scheduler": "DDIMScheduler", "call_defaults": {"num_inference_steps": 50}}


def test_generate_refuses_a_scheduler_the_demo_was_not_trained_for(capsys):
    """EDM schedulers do not list DDPMScheduler as compatible: the demo would draw noise, so the CLI refuses."""
    from diffkit import cli

    assert cli.main(["generate", "diffkit/ddpm-digits", "--scheduler", "EDMEulerScheduler"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffkit generate: error: --scheduler EDMEulerScheduler cannot take the config of DDPMScheduler")
    listed = err.split("compatible installed schedulers: ")[1].split(", ")
    assert "DDIMScheduler" in listed and "EulerDiscreteScheduler" in listed and "EDMEulerScheduler" not in listed


def test_verdict_counts_only_confident_images():
    labels = np.array([0, 1, 2, 2, 3, 9])
    confidence = np.array([0.9, 0.8, 0.95, 0.5, 0.79, 1.0])
    verdict = Verdict(labels, confidence)
    assert verdict.confident_fraction == pytest.approx(4 / 6)
    assert verdict.digits_present == [0, 1, 2, 9]  # 3 only appears below the threshold
    assert verdict.counts == {0: 1, 1: 1, 2: 1, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0, 8: 0, 9: 1}
    assert not verdict.passes()  # 67 % < 80 % and 4 digits < 9
    assert verdict.passes(min_fraction=0.6, min_digits=4)
    assert not verdict.passes(min_fraction=0.6, min_digits=5)


def test_as_batch_accepts_the_shapes_pipelines_return():
    rng = np.random.default_rng(0)
    nhwc = rng.random((3, 4, 4, 1)).astype(np.float32)
    expected = nhwc.reshape(3, 16)
    np.testing.assert_array_equal(as_batch(nhwc), expected)
    np.testing.assert_array_equal(as_batch(nhwc.transpose(0, 3, 1, 2)), expected)
    np.testing.assert_array_equal(as_batch(nhwc[..., 0]), expected)
    np.testing.assert_array_equal(as_batch(torch.from_numpy(nhwc).permute(0, 3, 1, 2)), expected)
    pictures = [Image.fromarray((im[..., 0] * 255).round().astype(np.uint8), mode="L") for im in nhwc]
    np.testing.assert_allclose(as_batch(pictures), expected, atol=0.5 / 255)
    with pytest.raises(ValueError, match="one channel"):
        as_batch(rng.random((2, 4, 4, 3)))
    with pytest.raises(ValueError, match="batch of images"):
        as_batch(rng.random((4, 4)))

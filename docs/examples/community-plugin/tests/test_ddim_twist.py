"""Tests of the community plugin, runnable installed or not.

The ``diffkit_registry`` fixture (from ``diffkit.testing``) gives a fresh registry that loads
no installed plugin; the test registers the hook modules it needs in-process, so the results
do not depend on what else is installed. From this folder: ``PYTHONPATH=src python -m pytest``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import diffkit.testing
from diffkit import DiffusionPipeline
from diffkit_community_ddim_twist import hooks
from diffkit_community_ddim_twist.pipeline import DDIMTwistPipeline, mirror_blend
from diffkit_models_unet import hooks as unet_hooks
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_ddim.pipeline import DDIMPipeline
from diffkit_scheduler_ddim import hooks as ddim_hooks
from diffkit_scheduler_ddim.ddim import DDIMScheduler

TINY_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(8, 16), norm_num_groups=4,
    down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=4,
)


@pytest.fixture
def registered(diffkit_registry):
    """A registry holding this plugin plus the UNet and DDIM scheduler plugins it reuses."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(diffkit.testing.plugin(unet_hooks, dist="diffkit-models-unet"))
        stack.enter_context(diffkit.testing.plugin(ddim_hooks, dist="diffkit-scheduler-ddim"))
        stack.enter_context(diffkit.testing.plugin(hooks, dist="diffkit-community-ddim-twist"))
        yield diffkit_registry


@pytest.fixture
def parts():
    torch.manual_seed(0)
    return UNet2DModel(**TINY_UNET).eval(), DDIMScheduler(num_train_timesteps=100)


def images(pipe, seed=0, **kwargs):
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=2, generator=generator, num_inference_steps=4, output_type="np", **kwargs).images


def asymmetry(array: np.ndarray) -> float:
    return float(np.abs(array - array[:, :, ::-1]).max())  # NHWC: axis 2 is the width


def test_hook_module_registers_the_pipeline(registered):
    entry = registered.entry("pipeline", "DDIMTwistPipeline")
    assert entry.target == "diffkit_community_ddim_twist.pipeline:DDIMTwistPipeline"  # a string, not the class
    assert registered.get("pipeline", "DDIMTwistPipeline") is DDIMTwistPipeline


def test_hook_module_is_light():
    code = (
        "import sys, diffkit_community_ddim_twist.hooks\n"
        "print(sorted(m for m in ('torch', 'diffkit_community_ddim_twist.pipeline') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_full_symmetry_gives_mirror_symmetric_images(parts):
    unet, scheduler = parts
    twisted = images(DDIMTwistPipeline(unet=unet, scheduler=scheduler))
    plain = images(DDIMPipeline(unet=unet, scheduler=scheduler))
    assert asymmetry(twisted) == 0.0  # exactly symmetric
    assert asymmetry(plain) > 0.01  # the plain DDIM images are not, so the twist did it
    assert not np.allclose(twisted, plain)


def test_zero_symmetry_is_exactly_ddim_and_partial_symmetry_is_in_between(parts):
    unet, scheduler = parts
    plain = images(DDIMPipeline(unet=unet, scheduler=scheduler))
    pipe = DDIMTwistPipeline(unet=unet, scheduler=scheduler, symmetry=0.0)
    np.testing.assert_array_equal(images(pipe), plain)
    half = images(pipe, symmetry=0.5)  # a per-call override leaves the setting alone
    assert pipe.settings["symmetry"] == 0.0
    assert 0.0 < asymmetry(half) < asymmetry(plain)


def test_mirror_blend():
    x = torch.arange(6.0).reshape(1, 1, 1, 6)
    assert torch.equal(mirror_blend(x, 0.0), x)
    assert torch.equal(mirror_blend(x, 1.0), torch.full_like(x, 2.5))
    assert torch.allclose(mirror_blend(x, 0.5), 0.75 * x + 0.25 * x.flip(-1))


def test_user_callback_sees_the_twisted_latents_and_can_replace_them(parts):
    unet, scheduler = parts
    seen = []

    def callback(pipe, step, timestep, tensors):
        seen.append(tensors["latents"].clone())
        return {"latents": tensors["latents"] * 0}

    out = images(DDIMTwistPipeline(unet=unet, scheduler=scheduler), callback_on_step_end=callback)
    assert len(seen) == 4
    assert all(torch.equal(t, t.flip(-1)) for t in seen)
    assert np.allclose(out, 0.5)  # zero latents decode to mid-grey
    with pytest.raises(ValueError, match="'noise'.* are not among"):
        images(DDIMTwistPipeline(unet=unet, scheduler=scheduler), callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=("noise",))


def test_symmetry_out_of_range_is_refused(parts):
    unet, scheduler = parts
    with pytest.raises(ValueError, match="symmetry must be between 0 and 1, got 2"):
        DDIMTwistPipeline(unet=unet, scheduler=scheduler, symmetry=2)
    with pytest.raises(ValueError, match="symmetry must be between 0 and 1, got -1"):
        images(DDIMTwistPipeline(unet=unet, scheduler=scheduler), symmetry=-1)


def test_checkpoint_round_trip_and_loading_a_ddim_checkpoint(registered, parts, tmp_path):
    unet, scheduler = parts
    pipe = DDIMTwistPipeline(unet=unet, scheduler=scheduler, symmetry=0.5)
    pipe.save_pretrained(tmp_path / "twist")
    index = json.loads((tmp_path / "twist" / "model_index.json").read_text())
    assert index["_class_name"] == "DDIMTwistPipeline" and index["symmetry"] == 0.5
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "twist")
    assert type(loaded) is DDIMTwistPipeline and loaded.settings == {"symmetry": 0.5}
    np.testing.assert_array_equal(images(loaded), images(pipe))

    DDIMPipeline(unet=unet, scheduler=scheduler).save_pretrained(tmp_path / "ddim")
    by_name = DiffusionPipeline.from_pretrained(tmp_path / "ddim", custom_pipeline="DDIMTwistPipeline")
    by_class = DDIMTwistPipeline.from_pretrained(tmp_path / "ddim", symmetry=0.25)
    assert type(by_name) is DDIMTwistPipeline and by_name.settings == {"symmetry": 1.0}
    assert by_class.settings == {"symmetry": 0.25}
    assert asymmetry(images(by_name)) == 0.0

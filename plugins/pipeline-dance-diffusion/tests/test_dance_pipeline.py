"""DanceDiffusionPipeline: clip length planning, outputs, callbacks, errors and wiring."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from diffkit_models_unet.unet_1d import UNet1DConfig, UNet1DModel
from diffkit_pipeline_dance_diffusion import hooks
from diffkit_pipeline_dance_diffusion.pipeline import DanceDiffusionPipeline, plan_length
from diffkit_scheduler_pndm.ipndm import IPNDMScheduler

TINY = dict(
    block_out_channels=(32, 32, 64),
    extra_in_channels=16,
    time_embedding_dim=16,
    sample_size=40,
    sample_rate=1000,
    in_channels=1,
    out_channels=1,
)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = DanceDiffusionPipeline(unet=UNet1DModel(**TINY).eval(), scheduler=IPNDMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize(
    "seconds, expected",
    [
        (None, (40, 40)),  # the UNet's sample_size
        (0.048, (48, 48)),  # already a multiple of 2**3
        (0.045, (48, 45)),  # generated longer, cut back
        (0.0241, (32, 24)),  # fractional samples are dropped from what is kept
    ],
)
def test_plan_length(seconds, expected):
    assert plan_length(UNet1DConfig(**TINY), 3, seconds) == expected


@pytest.mark.parametrize(
    "changes, seconds, message",
    [
        (dict(), 0.02, "too short"),
        (dict(), -1.0, "positive"),
        (dict(sample_rate=None), None, "sample_rate"),
    ],
)
def test_plan_length_errors(changes, seconds, message):
    with pytest.raises(ValueError, match=message):
        plan_length(UNet1DConfig(**{**TINY, **changes}), 3, seconds)


def test_outputs_are_clipped_float_arrays_or_tensors(pipe):
    out = pipe(num_inference_steps=2, audio_length_in_s=0.045, generator=torch.Generator().manual_seed(0))
    audio = out[0]
    assert out.audios is audio
    assert isinstance(audio, np.ndarray) and audio.dtype == np.float32 and audio.shape == (1, 1, 45)
    assert np.abs(audio).max() <= 1.0
    (tensor,) = pipe(
        num_inference_steps=2,
        audio_length_in_s=0.045,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
        return_dict=False,
    )
    assert torch.is_tensor(tensor)
    np.testing.assert_array_equal(tensor.numpy(), audio)
    numpy = pipe(  # diffusers' alias of "np"
        num_inference_steps=2, audio_length_in_s=0.045, generator=torch.Generator().manual_seed(0), output_type="numpy"
    ).audios
    np.testing.assert_array_equal(numpy, audio)
    assert pipe.sample_rate == 1000


def test_callback_sees_each_step_and_can_replace_the_audio(pipe):
    steps = []

    def callback(p, i, t, tensors):
        steps.append((i, float(t)))
        return {"audio": torch.full_like(tensors["audio"], 3.0)}

    audio = pipe(num_inference_steps=3, callback_on_step_end=callback).audios
    assert [i for i, _ in steps] == [0, 1, 2] and steps[0][1] == 1.0
    np.testing.assert_array_equal(audio, np.ones_like(audio))  # the replaced audio, clipped to 1
    with pytest.raises(ValueError, match="not among"):
        pipe(num_inference_steps=1, callback_on_step_end=callback, callback_on_step_end_tensor_inputs=["latents"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=2, generator=[torch.Generator()]), "one per clip"),
        (dict(output_type="pil"), "output_type"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=1, **kwargs)


def test_declared_components_and_offload_order(pipe):
    assert DanceDiffusionPipeline.component_names() == ["scheduler", "unet"]
    assert DanceDiffusionPipeline.model_cpu_offload_seq == "unet"
    sibling = DanceDiffusionPipeline(**pipe.components)
    assert sibling.unet is pipe.unet


def test_hooks_register_by_module_path_without_importing_torch():
    registered = []
    hooks.register_pipelines(lambda name, target, **meta: registered.append((name, target)))
    assert registered == [
        ("DanceDiffusionPipeline", "diffkit_pipeline_dance_diffusion.pipeline:DanceDiffusionPipeline")
    ]
    code = (
        "import sys, diffkit_pipeline_dance_diffusion.hooks, diffkit_pipeline_dance_diffusion.wav; "
        "assert 'torch' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

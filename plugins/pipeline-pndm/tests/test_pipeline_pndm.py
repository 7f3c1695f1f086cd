import threading

import numpy as np
import pytest
import torch

from diffkit import registry
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_pndm.pipeline import PNDMPipeline
from diffkit_scheduler_pndm.pndm import PNDMScheduler

TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(8, 16),
    norm_num_groups=4,
    layers_per_block=1,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def pipe():
    torch.manual_seed(0)
    pipe = PNDMPipeline(unet=UNet2DModel(**TINY_UNET), scheduler=PNDMScheduler(skip_prk_steps=True))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_registered_and_converts_compatible_schedulers(pipe):
    assert registry.get("pipeline", "PNDMPipeline") is PNDMPipeline
    assert PNDMPipeline.model_cpu_offload_seq == "unet"
    from_ddim_config = PNDMScheduler.from_config({"beta_schedule": "scaled_linear", "clip_sample": False})

    class Foreign:  # any scheduler object with a compatible config
        config = from_ddim_config.config

    sibling = PNDMPipeline(unet=pipe.unet, scheduler=Foreign())
    assert isinstance(sibling.scheduler, PNDMScheduler) and sibling.scheduler.config.beta_schedule == "scaled_linear"
    assert type(pipe)(**pipe.components).unet is pipe.unet


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=0)
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=2, generator=[torch.Generator()])
    with pytest.raises(ValueError, match="output_type"):
        pipe(num_inference_steps=1, output_type="jpeg")
    with pytest.raises(TypeError):
        pipe(eta=0.5)


def test_output_types_callback_and_model_calls(pipe):
    calls = []
    pipe.unet.register_forward_hook(lambda *args: calls.append(1))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    seen = []

    def callback(p, i, t, tensors):
        seen.append(int(t))
        return {}

    pt = pipe(generator=g(), num_inference_steps=3, output_type="pt", callback_on_step_end=callback).images
    assert len(calls) == 4 and seen == pipe.scheduler.plan(3).timesteps.tolist()  # n + 1 calls without PRK
    assert pt.shape == (1, 3, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    (arr,) = pipe(generator=g(), num_inference_steps=3, output_type="np", return_dict=False)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy())
    assert pipe(generator=g(), num_inference_steps=3).images[0].size == (8, 8)


def test_concurrent_calls_match_serial_ones(pipe):
    """The pipeline and its scheduler keep no per-call state: threads do not disturb each other."""
    def run(seed):
        return pipe(generator=torch.Generator().manual_seed(seed), num_inference_steps=4, output_type="np").images

    serial = [run(s) for s in (1, 2)]
    results = {}
    threads = [threading.Thread(target=lambda s=s: results.__setitem__(s, run(s))) for s in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    np.testing.assert_array_equal(results[1], serial[0])
    np.testing.assert_array_equal(results[2], serial[1])

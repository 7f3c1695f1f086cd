import math

import numpy as np
import pytest
import torch

from diffkit import registry
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_score_sde_ve.pipeline import ScoreSdeVePipeline
from diffkit_scheduler_score_sde_ve.score_sde_ve import ScoreSdeVeScheduler

TINY_NCSNPP = dict(
    sample_size=8,
    block_out_channels=(8, 16),
    norm_num_groups=None,
    layers_per_block=1,
    down_block_types=("SkipDownBlock2D", "SkipDownBlock2D"),
    up_block_types=("SkipUpBlock2D", "SkipUpBlock2D"),
    time_embedding_type="fourier",
    mid_block_scale_factor=math.sqrt(2.0),
    attention_head_dim=None,
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
    scheduler = ScoreSdeVeScheduler(num_train_timesteps=10, sigma_max=5.0, correct_steps=2)
    pipe = ScoreSdeVePipeline(unet=UNet2DModel(**TINY_NCSNPP), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_registered(pipe):
    assert registry.get("pipeline", "ScoreSdeVePipeline") is ScoreSdeVePipeline
    assert ScoreSdeVePipeline.model_cpu_offload_seq == "unet"


def test_model_calls_noise_levels_and_outputs(pipe):
    levels = []
    pipe.unet.register_forward_pre_hook(lambda module, args: levels.append(args[1].clone()))
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    pt = pipe(batch_size=2, generator=g(), num_inference_steps=3, output_type="pt").images
    # correct_steps=2 corrector calls and one predictor call per step, all conditioned on σ(t_i) per image
    sigmas = pipe.scheduler.plan(3).sigmas
    assert [lv.tolist() for lv in levels] == [[s, s] for s in sigmas.tolist() for _ in range(3)]
    assert pt.shape == (2, 3, 8, 8) and 0 <= pt.min() and pt.max() <= 1
    arr = pipe(batch_size=2, generator=[torch.Generator().manual_seed(s) for s in (1, 2)], num_inference_steps=3,
               output_type="np").images
    assert arr.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(pipe(batch_size=2, generator=g(), num_inference_steps=3, output_type="np").images,
                                  pt.permute(0, 2, 3, 1).numpy())


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="batch_size"):
        pipe(batch_size=0)
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=3, generator=[torch.Generator()] * 2)
    with pytest.raises(ValueError, match="not among"):
        pipe(num_inference_steps=1, callback_on_step_end=lambda *a: {}, callback_on_step_end_tensor_inputs=["noise"])

import pytest
import torch

from diffkit import registry
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_karras_ve.pipeline import KarrasVePipeline
from diffkit_scheduler_karras_ve.karras_ve import KarrasVeScheduler

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
    pipe = KarrasVePipeline(unet=UNet2DModel(**TINY_UNET), scheduler=KarrasVeScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_registered(pipe):
    assert registry.get("pipeline", "KarrasVePipeline") is KarrasVePipeline
    assert KarrasVePipeline.model_cpu_offload_seq == "unet"


def test_model_is_called_at_half_the_level_with_a_correction_except_at_the_end(pipe):
    levels = []
    pipe.unet.register_forward_pre_hook(lambda module, args: levels.append(float(args[1])))
    steps = []
    out = pipe(generator=torch.Generator().manual_seed(0), num_inference_steps=3, output_type="pt",
               callback_on_step_end=lambda p, i, t, tensors: steps.append(int(t)) or {}).images
    schedule = pipe.scheduler.plan(3).schedule.tolist()  # levels of t = 0, 1, 2: 4e-4, 2, 1e4
    churned = schedule[1] * 2**0.5  # only σ = 2 lies in [s_min, s_max]: σ̂ = (1 + γ)σ with γ = min(80/3, √2 - 1)
    # t=2: σ̂ = σ, then σ_prev; t=1: σ̂, then σ_prev; t=0: σ̂ only (the next level is 0)
    expected = [schedule[2] / 2, schedule[1] / 2, churned / 2, schedule[0] / 2, schedule[0] / 2]
    assert levels == pytest.approx(expected, rel=1e-6) and steps == [2, 1, 0]
    assert out.shape == (1, 3, 8, 8) and 0 <= out.min() and out.max() <= 1


def test_bad_arguments(pipe):
    with pytest.raises(ValueError, match="num_inference_steps >= 2"):
        pipe(num_inference_steps=1)
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=2, generator=[torch.Generator()])

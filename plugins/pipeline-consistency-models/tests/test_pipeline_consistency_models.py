import pytest
import torch

from diffkit import registry
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_consistency_models.pipeline import ConsistencyModelPipeline, class_label_tensor
from diffkit_scheduler_consistency.cm_stochastic_iterative import CMStochasticIterativeScheduler

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


def make_pipe(num_class_embeds=None):
    torch.manual_seed(0)
    unet = UNet2DModel(**TINY_UNET, num_class_embeds=num_class_embeds)
    pipe = ConsistencyModelPipeline(unet=unet, scheduler=CMStochasticIterativeScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_registered():
    assert registry.get("pipeline", "ConsistencyModelPipeline") is ConsistencyModelPipeline
    assert ConsistencyModelPipeline.model_cpu_offload_seq == "unet"


def test_class_labels():
    assert class_label_tensor(3, 1, 10, "cpu").tolist() == [3]
    assert class_label_tensor([1, 2], 2, 10, "cpu").dtype == torch.int32
    torch.manual_seed(5)
    drawn = class_label_tensor(None, 4, 10, "cpu")
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.randint(0, 10, (4,)))  # torch's global generator, as in diffusers
    assert class_label_tensor([1], 1, None, "cpu") is None
    with pytest.raises(ValueError, match="one int but batch_size=2"):
        class_label_tensor(3, 2, 10, "cpu")
    with pytest.raises(ValueError, match="got 3 class_labels for batch_size=2"):
        class_label_tensor([1, 2, 3], 2, 10, "cpu")
    with pytest.raises(TypeError, match="class_labels"):
        class_label_tensor("cat", 1, 10, "cpu")


def test_labels_reach_the_model_and_callbacks_run():
    pipe = make_pipe(num_class_embeds=10)
    seen_labels, legacy, modern = [], [], []
    pipe.unet.register_forward_pre_hook(lambda m, args, kwargs: seen_labels.append(kwargs["class_labels"].tolist()),
                                        with_kwargs=True)
    images = pipe(batch_size=2, class_labels=[4, 9], num_inference_steps=3, output_type="pt",
                  callback=lambda i, t, x: legacy.append(i), callback_steps=2,
                  callback_on_step_end=lambda p, i, t, tensors: modern.append(i) or {}).images
    assert seen_labels == [[4, 9]] * 3 and legacy == [0, 2] and modern == [0, 1, 2]
    assert images.shape == (2, 3, 8, 8)


def test_latents_and_bad_arguments():
    pipe = make_pipe()
    latents = torch.randn(1, 3, 8, 8)
    a = pipe(latents=latents, output_type="np").images
    b = pipe(latents=latents, output_type="np", generator=torch.Generator().manual_seed(9)).images
    assert (a == b).all()  # one-step sampling from given latents draws nothing
    with pytest.raises(ValueError, match=r"latents have shape \(1, 3, 4, 4\), expected \(1, 3, 8, 8\)"):
        pipe(latents=torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="num_inference_steps or timesteps"):
        pipe(num_inference_steps=None)
    with pytest.raises(ValueError, match="callback_steps"):
        pipe(callback_steps=0)
    with pytest.raises(ValueError, match="one per image"):
        pipe(batch_size=2, generator=[torch.Generator()])

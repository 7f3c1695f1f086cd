"""The pipeline memory API across packages: attention backends and offload strategies on DDPM.

A tiny UNet with attention in every block (2 and 4 heads) keeps this fast. Offloading runs on
the CPU (same hooks, no memory saved) for exact-output checks, and on ``meta`` where a forward
that completes proves every weight reached the execution device.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from diffkit import ComponentNotFoundError
from diffkit.attention import default_backend
from diffkit_attention_sliced.sliced import SlicedBackend
from diffkit_attention_sdpa.sdpa import SDPABackend
from diffkit_models_unet.attention import SpatialSelfAttention
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_offload_model.model_offload import ModelOffload
from diffkit_offload_sequential.sequential_offload import SequentialOffload
from diffkit_pipeline_ddim.pipeline import DDIMPipeline
from diffkit_pipeline_ddpm.pipeline import DDPMPipeline
from diffkit_scheduler_ddpm.ddpm import DDPMScheduler

TINY_UNET = dict(
    sample_size=8,
    block_out_channels=(8, 16),
    layers_per_block=1,
    norm_num_groups=4,
    attention_head_dim=4,  # 2 heads at 8 channels, 4 heads at 16
    down_block_types=("AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D"),
)
META = torch.device("meta")


def make_unet(seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**TINY_UNET).eval()


def make_pipe(seed: int = 0) -> DDPMPipeline:
    pipe = DDPMPipeline(unet=make_unet(seed), scheduler=DDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run(pipe, seed: int = 1, steps: int = 3, batch_size: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return pipe(batch_size=batch_size, generator=generator, num_inference_steps=steps, output_type="pt").images


def layers(model) -> list[SpatialSelfAttention]:
    return [m for m in model.modules() if isinstance(m, SpatialSelfAttention)]


def tensors(pipe) -> list[torch.Tensor]:
    return [t for _, m in pipe._modules() for t in (*m.parameters(), *m.buffers())]


def hook_count(pipe) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for _, c in pipe._modules() for m in c.modules())


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models gain nothing from intra-op threads, and lose a lot on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sdpa_images(one_thread) -> torch.Tensor:
    return run(make_pipe())


# -- attention backends ---------------------------------------------------------------------


@pytest.mark.parametrize("slice_size", ["auto", "max", 1, 2])
def test_attention_slicing_matches_sdpa(sdpa_images, slice_size):
    pipe = make_pipe()
    pipe.enable_attention_slicing(slice_size)
    assert pipe.attention_backend == "sliced"
    backends = {id(layer.attention_backend) for layer in layers(pipe.unet)}
    assert len(backends) == 1 and isinstance(layers(pipe.unet)[0].attention_backend, SlicedBackend)
    assert layers(pipe.unet)[0].attention_backend.slice_size == slice_size
    torch.testing.assert_close(run(pipe), sdpa_images, rtol=0, atol=1e-5)


def test_disable_attention_slicing_goes_back_to_sdpa():
    pipe = make_pipe()
    assert pipe.attention_backend == "sdpa"
    pipe.enable_attention_slicing()
    pipe.disable_attention_slicing()
    assert pipe.attention_backend == "sdpa"
    assert all(layer.attention_backend is default_backend() for layer in layers(pipe.unet))
    pipe.enable_attention_slicing("max")
    pipe.enable_attention_slicing(None)  # diffusers' other way to turn it off
    assert pipe.attention_backend == "sdpa"


def test_set_attention_backend_by_name_with_options_and_on_models(sdpa_images):
    pipe = make_pipe()
    pipe.set_attention_backend("sliced", slice_size=2)
    assert pipe.attention_backend == "sliced"
    torch.testing.assert_close(run(pipe), sdpa_images, rtol=0, atol=1e-5)
    unet = make_unet()
    instance = unet.set_attention_backend("sliced", slice_size="max")
    assert all(layer.attention_backend is instance for layer in layers(unet))


def test_a_slice_size_larger_than_a_layer_is_clamped_and_said_once(sdpa_images):
    pipe = make_pipe()
    with pytest.warns(UserWarning, match=r"slice_size=3 is larger than the 2 head\(s\) of attention layer 'unet\.down_blocks\.0") as said:
        pipe.enable_attention_slicing(3)  # as diffusers' sliced processor, a slice takes at most a layer's heads
        images = run(pipe)
    assert len(said) == 1
    torch.testing.assert_close(images, sdpa_images, rtol=0, atol=1e-5)
    unet = make_unet()  # the same on a model alone
    with pytest.warns(UserWarning, match=r"slice_size=3 is larger than the 2 head\(s\) of attention layer 'UNet2DModel\."):
        unet.set_attention_backend("sliced", slice_size=3)


def test_unknown_and_unavailable_backends_raise_and_keep_the_current_one():
    pipe = make_pipe()
    pipe.enable_attention_slicing()
    with pytest.raises(ComponentNotFoundError, match="slised"):
        pipe.set_attention_backend("slised")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="attention backend 'xformers' is not available: "):
            pipe.enable_xformers_memory_efficient_attention()
    assert pipe.attention_backend == "sliced"
    pipe.disable_xformers_memory_efficient_attention()  # xformers is not on: slicing stays
    assert pipe.attention_backend == "sliced"


def test_a_model_assigned_later_gets_the_shared_instance():
    pipe = make_pipe()
    pipe.enable_attention_slicing("max")
    shared = layers(pipe.unet)[0].attention_backend
    pipe.unet = make_unet(seed=5)
    assert all(layer.attention_backend is shared for layer in layers(pipe.unet))
    sibling = DDIMPipeline(**pipe.components)
    assert all(layer.attention_backend is shared for layer in layers(sibling.unet))


def test_one_backend_type_compiles_once_per_shape_not_once_per_layer():
    """Regional compile of every attention layer: graphs are shared by layers and by instances of a type."""
    from torch._dynamo.utils import counters

    unet = make_unet()
    # dynamo specialises on each input's sizes and strides: count the distinct ones the layers see
    shapes: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    handles = [
        layer.register_forward_pre_hook(lambda m, a: shapes.add((tuple(a[0].shape), a[0].stride())))
        for layer in layers(unet)
    ]
    x = torch.randn(1, 3, 8, 8)
    with torch.inference_mode():
        unet(x, 10)
    for handle in handles:
        handle.remove()
    assert len(layers(unet)) == 7 and len(shapes) == 3

    torch._dynamo.reset()
    counters.clear()
    try:
        unet.set_attention_backend(SDPABackend())
        for layer in layers(unet):
            layer.compile(backend="eager", dynamic=False)
        with torch.inference_mode():
            expected = unet(x, 10).sample
            assert counters["stats"]["unique_graphs"] == len(shapes)  # not one per layer
            unet.set_attention_backend(SDPABackend())  # a new shared instance of the same type
            for layer in layers(unet)[::2]:
                layer.attention_backend = SDPABackend()  # even distinct instances: guarded by type
            again = unet(x, 10).sample
            assert counters["stats"]["unique_graphs"] == len(shapes)
            unet.set_attention_backend(SlicedBackend("max"))  # another type does compile anew
            sliced = unet(x, 10).sample
            assert counters["stats"]["unique_graphs"] == 2 * len(shapes)
    finally:
        torch._dynamo.reset()
    torch.testing.assert_close(again, expected, rtol=0, atol=0)
    torch.testing.assert_close(sliced, expected, rtol=0, atol=1e-5)


# -- offload strategies ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["model", "sequential"])
def test_offloaded_images_equal_the_plain_run_exactly(sdpa_images, name):
    pipe = make_pipe()
    strategy = pipe.enable_offload(name, device="cpu")
    assert isinstance(strategy, ModelOffload if name == "model" else SequentialOffload)
    assert pipe.offload_strategy is strategy
    assert pipe.device == pipe._execution_device == torch.device("cpu")
    assert torch.equal(run(pipe), sdpa_images)
    assert strategy.onloaded == ()
    assert torch.equal(run(pipe), sdpa_images)


def test_diffusers_names_on_the_cpu(sdpa_images):
    pipe = make_pipe()
    pipe.enable_model_cpu_offload(device="cpu")
    assert isinstance(pipe.offload_strategy, ModelOffload)
    assert torch.equal(run(pipe), sdpa_images)
    pipe.enable_sequential_cpu_offload(device="cpu")  # replaces the model strategy
    assert isinstance(pipe.offload_strategy, SequentialOffload)
    assert torch.equal(run(pipe), sdpa_images)
    pipe.remove_all_hooks()
    assert pipe.offload_strategy is None and hook_count(pipe) == 0
    pipe.maybe_free_model_hooks()  # a no-op without offloading


def test_sliced_attention_and_offloading_together(sdpa_images):
    pipe = make_pipe()
    pipe.enable_attention_slicing("auto")
    pipe.enable_model_cpu_offload(device="cpu")
    torch.testing.assert_close(run(pipe), sdpa_images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["model", "sequential"])
def test_the_unet_called_directly_runs_on_the_execution_device(name):
    pipe = make_pipe()
    strategy = pipe.enable_offload(name, device=META)
    assert pipe.device == pipe._execution_device == META
    with torch.inference_mode():
        out = pipe.unet(torch.randn(2, 3, 8, 8), torch.tensor(7)).sample  # CPU inputs
    assert out.device == META and out.shape == (2, 3, 8, 8)
    pipe.maybe_free_model_hooks()
    assert strategy.onloaded == ()
    assert all(t.device.type == "cpu" for t in tensors(pipe))


def test_disable_offload_removes_every_hook_and_keeps_the_weights():
    pipe = make_pipe()
    before = [t.clone() for t in tensors(pipe)]
    for name in ("model", "sequential"):
        pipe.enable_offload(name, device=META)
        with torch.inference_mode():
            pipe.unet(torch.randn(1, 3, 8, 8), 3)
        assert hook_count(pipe) > 0
        pipe.disable_offload()
        assert hook_count(pipe) == 0 and pipe.offload_strategy is None
    assert all(torch.equal(a, b) for a, b in zip(tensors(pipe), before, strict=True))


def test_to_a_device_while_offloading_warns_and_turns_offloading_off(sdpa_images):
    pipe = make_pipe()
    pipe.enable_model_cpu_offload(device="cpu")
    with pytest.warns(UserWarning, match=r"to\('cpu'\) while offload strategy 'model' is active"):
        assert pipe.to("cpu") is pipe
    assert pipe.offload_strategy is None and hook_count(pipe) == 0
    assert torch.equal(run(pipe), sdpa_images)


def test_to_a_dtype_while_offloading_keeps_offloading():
    expected = run(make_pipe().to(torch.float64))
    pipe = make_pipe()
    pipe.enable_sequential_cpu_offload(device="cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pipe.to(torch.float64)
    assert pipe.unet.dtype == torch.float64 and isinstance(pipe.offload_strategy, SequentialOffload)
    images = run(pipe)
    assert images.dtype == torch.float64 and torch.equal(images, expected)


def test_a_component_replaced_while_offloading_is_hooked_and_the_old_one_released():
    pipe = make_pipe()
    strategy = pipe.enable_offload("model", device=META)
    old = pipe.unet
    pipe.unet = make_unet(seed=3)
    assert pipe.offload_strategy is strategy
    assert sum(len(m._forward_pre_hooks) for m in old.modules()) == 0
    with torch.inference_mode():
        assert pipe.unet(torch.randn(1, 3, 8, 8), 1).sample.device == META
    assert strategy.onloaded == ("unet",)


def test_offload_errors_name_what_is_wrong():
    pipe = make_pipe()
    with pytest.raises(ComponentNotFoundError, match="modle"):
        pipe.enable_offload("modle", device="cpu")
    with pytest.raises(ValueError, match="not both"):
        pipe.enable_model_cpu_offload(gpu_id=1, device="cuda:0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="cannot offload to cuda: CUDA is not available"):
            pipe.enable_model_cpu_offload()
        with pytest.raises(RuntimeError, match="cannot offload to cuda:1"):
            pipe.enable_sequential_cpu_offload(gpu_id=1)
    accelerator = getattr(torch, "accelerator", None)
    if not (accelerator is not None and accelerator.is_available()) and not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no accelerator; pass device='cpu'"):
            pipe.enable_offload("model")
    assert pipe.offload_strategy is None and hook_count(pipe) == 0

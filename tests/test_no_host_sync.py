"""No host-device synchronisation inside the SD and SDXL denoising loops.

The pipeline runs on the ``meta`` device, which stands in for an accelerator: every tensor
the loop makes lives there, the schedulers' deliberate host copies stay on the CPU, and a
read of a device value (``item``, ``tolist``, ``bool``, ``nonzero``, ...) is what would make
the CPU wait for a GPU. A torch function mode active only while the loop iterates (it wraps
the pipeline's progress bar) turns each such read into an error naming it.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from tiny_speed_pipelines import swap_scheduler, tiny_sd, tiny_sdxl

pytest.importorskip("transformers")

T = torch.Tensor
#: reads of tensor values into Python, or ops whose output size depends on values
VALUE_READS = frozenset({
    T.item, T.tolist, T.__bool__, T.__int__, T.__float__, T.__index__, T.numpy, T.__array__, T.cpu,
    T.nonzero, torch.nonzero, T.is_nonzero, torch.is_nonzero, torch.equal, torch.allclose,
    T.masked_select, torch.masked_select, T.unique, torch.unique, torch.argwhere, T.argwhere,
})


class HostSyncError(AssertionError):
    pass


class SyncDetector(TorchFunctionMode):
    """Raise on a value read of a tensor that is not on the CPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in VALUE_READS and any(isinstance(a, torch.Tensor) and a.device.type != "cpu" for a in args):
            raise HostSyncError(f"host-device sync inside the denoising loop: {getattr(func, '__name__', func)}")
        return func(*args, **(kwargs or {}))


def guard_loop(pipe) -> None:
    """Wrap ``pipe.progress_bar`` so that :class:`SyncDetector` is on while the loop runs."""
    original = pipe.progress_bar

    def progress_bar(iterable=None, total=None):
        def guarded():
            with SyncDetector():
                yield from original(iterable, total)

        return guarded()

    object.__setattr__(pipe, "progress_bar", progress_bar)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    pipe = tiny_sd(tmp_path_factory.mktemp("sd"))
    pipe.to("meta")
    guard_loop(pipe)
    return pipe


SD_SCHEDULERS = ["DDIMScheduler", "EulerAncestralDiscreteScheduler", "DPMSolverMultistepScheduler",
                 "UniPCMultistepScheduler", "HeunDiscreteScheduler"]


@pytest.mark.parametrize("scheduler", SD_SCHEDULERS)
def test_sd_loop_reads_no_device_value(sd, scheduler):
    swap_scheduler(sd, scheduler)
    latents = sd("a digit", num_inference_steps=3, height=32, width=32, output_type="latent",
                 generator=torch.Generator().manual_seed(0)).images
    assert latents.device.type == "meta" and latents.shape == (1, 4, 16, 16)


def test_sd_loop_with_deepcache_reads_no_device_value(sd):
    pytest.importorskip("diffkit_cache_deepcache")
    swap_scheduler(sd, "DDIMScheduler")
    sd.enable_step_cache("deepcache", interval=2)
    try:
        latents = sd("a digit", num_inference_steps=4, height=32, width=32, output_type="latent").images
    finally:
        sd.disable_step_cache()
    assert latents.device.type == "meta"


def test_the_detector_catches_a_read_inside_the_loop(sd):
    swap_scheduler(sd, "DDIMScheduler")

    def reads_a_value(pipe, step, timestep, tensors):
        float(tensors["latents"].sum())
        return tensors

    with pytest.raises(HostSyncError, match="__float__"):
        sd("a digit", num_inference_steps=2, height=32, width=32, output_type="latent",
           callback_on_step_end=reads_a_value)


@pytest.mark.parametrize(("scheduler", "deepcache"), [
    ("EulerDiscreteScheduler", False), ("DPMSolverMultistepScheduler", False), ("EulerDiscreteScheduler", True),
])
def test_sdxl_loop_reads_no_device_value(tmp_path, scheduler, deepcache):
    pytest.importorskip("diffkit_pipeline_stable_diffusion_xl")
    pipe = tiny_sdxl(tmp_path, scheduler)
    pipe.to("meta")
    guard_loop(pipe)
    if deepcache:
        pipe.enable_step_cache("deepcache", interval=2)
    latents = pipe("a digit", num_inference_steps=3, height=32, width=32, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).images
    assert latents.device.type == "meta"

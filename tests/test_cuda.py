"""On a CUDA GPU: parity with diffusers, offload and xformers where they matter.

CI has no GPU, so every test here skips there; they run on a machine with one (the
project's device checks run them). The checkpoint is a tiny ``DDPMPipeline`` with attention
blocks that diffusers builds and saves. TF32 is turned off so that float32 results compare
at float32 precision.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from diffkit import DiffusionPipeline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

STEPS = 10
BATCH = 2


@pytest.fixture(autouse=True)
def exact_float32() -> Iterator[None]:
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=2, block_out_channels=(64, 128, 128),
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    )
    folder = tmp_path_factory.mktemp("cuda") / "ddpm"
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(folder)
    return folder


def generate(pipe, steps: int = STEPS) -> np.ndarray:
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(batch_size=BATCH, num_inference_steps=steps, generator=generator, output_type="np").images


def generate_measured(pipe) -> tuple[np.ndarray, float]:
    """Images, and the peak GPU memory (MiB) allocated while they were made."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    images = generate(pipe)
    torch.cuda.synchronize()
    return images, torch.cuda.max_memory_allocated() / 2**20


def test_pipeline_on_cuda_matches_diffusers_on_cuda(checkpoint):
    import diffusers

    ours = generate(DiffusionPipeline.from_pretrained(checkpoint).to("cuda"))
    theirs = generate(diffusers.DDPMPipeline.from_pretrained(checkpoint).to("cuda"))
    assert np.abs(ours - theirs).max() <= 1e-5


def test_pipeline_on_cuda_matches_the_cpu(checkpoint):
    on_gpu = generate(DiffusionPipeline.from_pretrained(checkpoint).to("cuda"))
    on_cpu = generate(DiffusionPipeline.from_pretrained(checkpoint))
    assert np.abs(on_gpu - on_cpu).max() <= 1e-4


def test_float16_on_cuda_matches_diffusers_float16(checkpoint):
    import diffusers

    pipe = DiffusionPipeline.from_pretrained(checkpoint, torch_dtype=torch.float16).to("cuda")
    assert pipe.unet.dtype == torch.float16 and pipe.device.type == "cuda"
    ours = generate(pipe)
    theirs = generate(diffusers.DDPMPipeline.from_pretrained(checkpoint, torch_dtype=torch.float16).to("cuda"))
    assert np.isfinite(ours).all()
    assert np.abs(ours - theirs).max() <= 1e-2  # float16: the order of operations shows at 1e-3


@pytest.mark.parametrize("mode", ["model", "sequential"])
def test_offload_gives_the_same_images_with_less_memory_held(checkpoint, mode):
    plain = DiffusionPipeline.from_pretrained(checkpoint).to("cuda")
    expected, peak_plain = generate_measured(plain)
    del plain
    torch.cuda.empty_cache()
    held_before = torch.cuda.memory_allocated()

    pipe = DiffusionPipeline.from_pretrained(checkpoint)
    weights_mib = sum(p.numel() * p.element_size() for p in pipe.unet.parameters()) / 2**20
    pipe.enable_offload(mode, device="cuda")
    assert pipe.device.type == "cuda"  # where the pipeline runs, although the weights rest on the CPU
    images, peak = generate_measured(pipe)
    assert np.abs(images - expected).max() <= 1e-6
    assert all(p.device.type == "cpu" for p in pipe.unet.parameters())
    assert torch.cuda.memory_allocated() - held_before < 2**20  # nothing left behind on the GPU
    if mode == "sequential":  # only one layer's weights at a time
        assert peak < peak_plain - weights_mib / 2, (peak, peak_plain, weights_mib)


def test_xformers_backend_matches_sdpa(checkpoint):
    pytest.importorskip("xformers.ops")
    from diffkit.attention import resolve_backend

    g = torch.Generator(device="cuda").manual_seed(0)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float16, 2e-3)):
        q, k, v = (torch.randn(2, 4, n, 40, generator=g, device="cuda", dtype=dtype) for n in (77, 93, 93))
        mask = torch.randn(2, 1, 77, 93, generator=g, device="cuda", dtype=dtype)
        sdpa, xformers = resolve_backend("sdpa"), resolve_backend("xformers")
        for m in (None, mask):
            assert (xformers(q, k, v, attn_mask=m) - sdpa(q, k, v, attn_mask=m)).abs().max() <= tolerance

    plain = generate(DiffusionPipeline.from_pretrained(checkpoint).to("cuda"))
    pipe = DiffusionPipeline.from_pretrained(checkpoint).to("cuda")
    pipe.enable_xformers_memory_efficient_attention()
    assert pipe.attention_backend == "xformers"
    assert np.abs(generate(pipe) - plain).max() <= 1e-4

"""LDMPipeline: output types, the latent scaling contract, callbacks, errors and wiring."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from diffkit_models_autoencoder.vq_model import VQModel
from diffkit_models_unet.unet_2d import UNet2DModel
from diffkit_pipeline_latent_diffusion import hooks
from diffkit_pipeline_latent_diffusion.unconditional import LDMPipeline
from diffkit_scheduler_ddim.ddim import DDIMScheduler
from diffkit_scheduler_ddpm.ddpm import DDPMScheduler

UNET = dict(
    sample_size=4,
    in_channels=3,
    out_channels=3,
    layers_per_block=1,
    block_out_channels=(8, 8),
    norm_num_groups=4,
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D",) * 2,
)
VQ = dict(
    block_out_channels=(8, 8),
    down_block_types=("DownEncoderBlock2D",) * 2,
    up_block_types=("UpDecoderBlock2D",) * 2,
    norm_num_groups=4,
    num_vq_embeddings=8,
    scaling_factor=0.25,
)


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    pipe = LDMPipeline(
        vqvae=VQModel(**VQ).eval(), unet=UNet2DModel(**UNET).eval(), scheduler=DDIMScheduler(num_train_timesteps=50)
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_output_types_share_one_decoding(pipe):
    latents = pipe(generator=_gen(), num_inference_steps=2, output_type="latent").images
    assert latents.shape == (1, 3, 4, 4)
    pt = pipe(generator=_gen(), num_inference_steps=2, output_type="pt").images
    with torch.no_grad():
        decoded = pipe.vqvae.decode(latents / 0.25).sample
    torch.testing.assert_close(pt, (decoded / 2 + 0.5).clamp(0, 1))
    (arr,) = pipe(generator=_gen(), num_inference_steps=2, output_type="np", return_dict=False)
    assert arr.shape == (1, 8, 8, 3)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-7)
    numpy = pipe(generator=_gen(), num_inference_steps=2, output_type="numpy").images  # diffusers' alias of "np"
    np.testing.assert_array_equal(numpy, arr)
    pil = pipe(generator=_gen(), num_inference_steps=2).images
    assert pil[0].size == (8, 8)


def test_generator_list_draws_each_image_alone(pipe):
    both = pipe(batch_size=2, generator=[_gen(1), _gen(2)], num_inference_steps=2, output_type="latent").images
    second = pipe(generator=_gen(2), num_inference_steps=2, output_type="latent").images
    torch.testing.assert_close(both[1:], second)


def test_callback_replaces_latents(pipe):
    seen = []

    def callback(p, i, t, tensors):
        seen.append(i)
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = pipe(num_inference_steps=3, output_type="latent", callback_on_step_end=callback).images
    assert seen == [0, 1, 2] and torch.count_nonzero(out) == 0


def test_schedulers_without_eta_still_run(pipe):
    ddpm = LDMPipeline(vqvae=pipe.vqvae, unet=pipe.unet, scheduler=DDPMScheduler(num_train_timesteps=50))
    ddpm.set_progress_bar_config(disable=True)
    out = ddpm(generator=_gen(), num_inference_steps=2, eta=0.7, output_type="np").images
    assert out.shape == (1, 8, 8, 3) and np.isfinite(out).all()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=3, generator=[_gen()]), "one per image"),
        (dict(output_type="wav"), "output_type"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_bad_arguments(pipe, kwargs, message):
    with pytest.raises(ValueError, match=message):
        pipe(num_inference_steps=1, **kwargs)


def test_declared_components_and_offload_order(pipe):
    assert LDMPipeline.component_names() == ["scheduler", "unet", "vqvae"]
    assert LDMPipeline.model_cpu_offload_seq == "unet->vqvae"
    assert LDMPipeline(**pipe.components).vqvae is pipe.vqvae


def test_hooks_register_by_module_path_without_importing_torch():
    registered = []
    hooks.register_pipelines(lambda name, target, **meta: registered.append((name, target)))
    assert registered == [("LDMPipeline", "diffkit_pipeline_latent_diffusion.unconditional:LDMPipeline")]
    code = "import sys, diffkit_pipeline_latent_diffusion.hooks; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

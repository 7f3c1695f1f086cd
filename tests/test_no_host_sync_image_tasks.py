"""No host-device synchronisation inside the img2img, inpainting and InstructPix2Pix loops.

The same meta-device check as ``test_no_host_sync.py`` (whose detector this reuses): the strength
cut, the legacy inpainting blend (the known region noised to the next timestep every step) and the
three-branch pix2pix guidance must never read a device value while the loop runs.
"""

from __future__ import annotations

import PIL.Image
import pytest
import torch

from test_no_host_sync import guard_loop
from tiny_speed_pipelines import swap_scheduler, tiny_sd

pytest.importorskip("transformers")

from diffkit import AutoPipelineForImage2Image, AutoPipelineForInpainting, registry  # noqa: E402

IMAGE = PIL.Image.new("RGB", (32, 32), (200, 40, 90))
MASK = PIL.Image.new("L", (32, 32), 255)


@pytest.fixture(scope="module")
def sd(tmp_path_factory):
    pipe = tiny_sd(tmp_path_factory.mktemp("sd-tasks"))
    pipe.to("meta")
    return pipe


def _guarded(pipe):
    guard_loop(pipe)
    return pipe


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "EulerDiscreteScheduler", "DPMSolverMultistepScheduler"])
def test_img2img_and_legacy_inpainting_read_no_device_value(sd, scheduler):
    swap_scheduler(sd, scheduler)
    img2img = _guarded(AutoPipelineForImage2Image.from_pipe(sd))
    latents = img2img("a digit", image=IMAGE, strength=0.6, num_inference_steps=4, output_type="latent",
                      generator=torch.Generator().manual_seed(0)).images
    assert latents.device.type == "meta" and latents.shape == (1, 4, 16, 16)
    inpaint = _guarded(AutoPipelineForInpainting.from_pipe(sd))
    latents = inpaint("a digit", image=IMAGE, mask_image=MASK, strength=0.8, num_inference_steps=4, height=32,
                      width=32, output_type="latent", generator=torch.Generator().manual_seed(0)).images
    assert latents.device.type == "meta"


def test_nine_channel_inpainting_and_pix2pix_read_no_device_value(sd):
    swap_scheduler(sd, "EulerAncestralDiscreteScheduler")
    config = dict(sd.unet.config)
    for name, channels, extra in (
        ("StableDiffusionInpaintPipeline", 9, {"mask_image": MASK, "height": 32, "width": 32}),
        ("StableDiffusionInstructPix2PixPipeline", 8, {}),
    ):
        unet = registry.get("model", "UNet2DConditionModel")(**{**config, "in_channels": channels}).eval().to("meta")
        pipe = _guarded(registry.get("pipeline", name)(**{**sd.components, "unet": unet}, requires_safety_checker=False))
        pipe.set_progress_bar_config(disable=True)
        latents = pipe("a digit", image=IMAGE, num_inference_steps=3, output_type="latent",
                       generator=torch.Generator().manual_seed(0), **extra).images
        assert latents.device.type == "meta"

"""img2img, inpainting and InstructPix2Pix without diffusers: registration, UNet call counts, state, bad input.

Each bad input gives one clear error naming the argument. Parity with diffusers is in
``tests/parity/test_stable_diffusion_image_tasks_parity.py``.
"""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit_pipeline_stable_diffusion import hooks
from diffkit_pipeline_stable_diffusion.image_conditioning import encode_with_vae, strength_timesteps
from diffkit_pipeline_stable_diffusion.image_to_image import StableDiffusionImg2ImgPipeline
from diffkit_pipeline_stable_diffusion.inpaint import StableDiffusionInpaintPipeline
from diffkit_pipeline_stable_diffusion.instruct_pix2pix import StableDiffusionInstructPix2PixPipeline
from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

CALL = dict(prompt="a cat", num_inference_steps=4, output_type="np")
IMAGE = PIL.Image.new("RGB", (32, 32), (120, 30, 200))
MASK = PIL.Image.new("L", (32, 32), 255)


def _seed(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _make(cls, components, **unet_overrides):
    if unet_overrides:
        unet = registry.get("model", "UNet2DConditionModel")(**{**dict(components["unet"].config), **unet_overrides})
        components = {**components, "unet": unet.eval()}
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _CountCalls:
    """Counts forward calls of a module (a forward hook, removed on exit)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.count = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.count += 1

    def __enter__(self) -> _CountCalls:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


def test_hooks_register_each_task_with_its_task_and_family(diffkit_registry):
    from diffkit.testing import plugin

    with plugin(hooks, dist="diffkit-pipeline-stable-diffusion"):
        tasks = {e.name: (e.meta["task"], e.meta["family"]) for e in registry.entries("pipeline")}
        mine = ("StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionInstructPix2PixPipeline")
        classes = {name: registry.get("pipeline", name) for name in mine}
    assert tasks["StableDiffusionImg2ImgPipeline"] == ("image-to-image", "stable-diffusion")
    assert tasks["StableDiffusionInpaintPipeline"] == ("inpainting", "stable-diffusion")
    assert tasks["StableDiffusionInstructPix2PixPipeline"] == ("instruct-pix2pix", "stable-diffusion-instruct-pix2pix")
    assert all(cls.__name__ == name for name, cls in classes.items())
    text = StableDiffusionPipeline.component_names()
    assert all(cls.component_names() == text for cls in classes.values())


def test_img2img_at_strength_half_runs_half_the_unet_calls(components):
    text = _make(StableDiffusionPipeline, components)
    img2img = StableDiffusionImg2ImgPipeline(**text.components, requires_safety_checker=False)
    img2img.set_progress_bar_config(disable=True)
    with _CountCalls(text.unet) as full:
        text(**CALL, height=32, width=32, generator=_seed())
    with _CountCalls(text.unet) as half:
        img2img(**CALL, image=IMAGE, strength=0.5, generator=_seed())
    assert full.count == 4 and half.count == 2
    assert text.num_timesteps == 4 and img2img.num_timesteps == 2


def test_img2img_keeps_the_begin_index_off_the_scheduler(components):
    pipe = _make(StableDiffusionImg2ImgPipeline, components)
    euler = registry.get("scheduler", "EulerDiscreteScheduler").from_config(pipe.scheduler.config)
    pipe = _make(StableDiffusionImg2ImgPipeline, {**pipe.components, "scheduler": euler, "requires_safety_checker": False})
    first = pipe(**CALL, image=IMAGE, strength=0.5, generator=_seed()).images
    assert pipe.scheduler.begin_index is None
    np.testing.assert_array_equal(first, pipe(**CALL, image=IMAGE, strength=0.5, generator=_seed()).images)


@pytest.mark.parametrize("strength", [-0.1, 1.5, "0.5", True])
@pytest.mark.parametrize("cls", [StableDiffusionImg2ImgPipeline, StableDiffusionInpaintPipeline])
def test_strength_outside_0_1_is_refused(components, cls, strength):
    pipe = _make(cls, components)
    extra = {"mask_image": MASK} if cls is StableDiffusionInpaintPipeline else {}
    with pytest.raises(ValueError, match="strength must be a number in \\[0, 1\\]"):
        pipe(**CALL, image=IMAGE, strength=strength, **extra)


def test_strength_that_leaves_no_step_is_refused(components):
    with pytest.raises(ValueError, match="leaves no denoising step"):
        _make(StableDiffusionImg2ImgPipeline, components)(**CALL, image=IMAGE, strength=0.1)


@pytest.mark.parametrize("bad", ["photo.png", b"bytes", 3, [IMAGE, "photo.png"], []])
def test_image_of_an_unsupported_type_names_it(components, bad):
    pipe = _make(StableDiffusionImg2ImgPipeline, components)
    with pytest.raises(TypeError, match="image must be a PIL image, a numpy array or a torch tensor") as info:
        pipe(**CALL, image=bad, strength=0.5)
    if isinstance(bad, (str, bytes, int)):
        assert type(bad).__name__ in str(info.value)


def test_missing_image_and_mask_are_named(components):
    with pytest.raises(ValueError, match="image is required"):
        _make(StableDiffusionImg2ImgPipeline, components)(**CALL)
    with pytest.raises(ValueError, match="mask_image is required"):
        _make(StableDiffusionInpaintPipeline, components)(**CALL, image=IMAGE)
    with pytest.raises(TypeError, match="mask_image must be .* got dict"):
        _make(StableDiffusionInpaintPipeline, components)(**CALL, image=IMAGE, mask_image={})


def test_refused_pixels_name_the_argument(components):
    pipe = _make(StableDiffusionInpaintPipeline, components)
    with pytest.raises(TypeError, match="^mask_image: numpy arrays must hold floats"):
        pipe(**CALL, image=IMAGE, mask_image=np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="^image: image size 1x1 .* smaller than the VAE scale factor"):
        _make(StableDiffusionImg2ImgPipeline, components)(**CALL, image=PIL.Image.new("RGB", (1, 1)), strength=0.5)


@pytest.mark.parametrize(
    "mask",
    [PIL.Image.new("L", (16, 32)), np.zeros((32, 24), np.float32), torch.zeros(1, 1, 8, 8)],
    ids=["pil", "numpy", "tensor"],
)
def test_mask_of_another_size_than_the_image_is_refused(components, mask):
    """diffusers resizes image and mask to the output size each on its own, silently misplacing the mask."""
    pipe = _make(StableDiffusionInpaintPipeline, components)
    with pytest.raises(ValueError, match="mask_image is .* pixels but image is 32x32"):
        pipe(**CALL, image=IMAGE, mask_image=mask)


def test_unet_channels_pick_or_refuse_the_path(components):
    # an 8-channel (InstructPix2Pix) UNet is neither inpainting path
    with pytest.raises(ValueError, match="in_channels=8 .*StableDiffusionInstructPix2PixPipeline"):
        _make(StableDiffusionInpaintPipeline, components, in_channels=8)(**CALL, image=IMAGE, mask_image=MASK)
    # a 9-channel inpainting UNet given to img2img (the plain latents path), and the reverse for pix2pix
    with pytest.raises(ValueError, match="in_channels=9 .*StableDiffusionInpaintPipeline"):
        _make(StableDiffusionImg2ImgPipeline, components, in_channels=9)(**CALL, image=IMAGE)
    with pytest.raises(ValueError, match="needs a UNet with 8 input channels .* in_channels=4"):
        _make(StableDiffusionInstructPix2PixPipeline, components)(**CALL, image=IMAGE)
    # masked_image_latents with channels that are neither latents nor pixels
    pipe = _make(StableDiffusionInpaintPipeline, components, in_channels=9)
    with pytest.raises(ValueError, match="masked_image_latents must have shape \\(batch, 4, "):
        pipe(**CALL, image=IMAGE, mask_image=MASK, masked_image_latents=torch.zeros(1, 5, 16, 16))


def test_legacy_inpainting_keeps_the_known_region(components):
    """With a 4-channel UNet and a mask that keeps the left half, the left half of the latents is the image's."""
    pipe = _make(StableDiffusionInpaintPipeline, components)
    mask = np.zeros((32, 32), np.float32)
    mask[:, 16:] = 1.0
    seen = {}

    def grab(_pipe, step, _t, tensors):
        seen[step] = tensors["latents"]
        return {}

    call = {**CALL, "output_type": "latent"}
    pipe(**call, image=IMAGE, mask_image=mask, generator=_seed(), callback_on_step_end=grab)
    # the legacy path draws the image's latents first, with the call's generator
    known = encode_with_vae(pipe.vae, pipe.image_processor.preprocess(IMAGE), _seed())
    last = seen[3]
    assert torch.equal(last[..., :8], known[..., :8])
    assert not torch.allclose(last[..., 8:], known[..., 8:], atol=1e-2)


def test_padding_mask_crop_needs_pil_in_and_out(components):
    pipe = _make(StableDiffusionInpaintPipeline, components, in_channels=9)
    with pytest.raises(ValueError, match="padding_mask_crop needs mask_image as one PIL image, got ndarray"):
        pipe(**CALL, image=IMAGE, mask_image=np.ones((32, 32), np.float32), padding_mask_crop=2)
    with pytest.raises(ValueError, match="output_type must be 'pil'"):
        pipe(**CALL, image=IMAGE, mask_image=MASK, padding_mask_crop=2)


def test_pix2pix_guidance_runs_three_branches_in_one_call(components):
    pipe = _make(StableDiffusionInstructPix2PixPipeline, components, in_channels=8)
    batches = []
    handle = pipe.unet.register_forward_hook(lambda _m, args, _out: batches.append(args[0].shape[0]))
    try:
        pipe(**CALL, image=IMAGE, generator=_seed())
        pipe(**CALL, image=IMAGE, generator=_seed(), guidance_scale=1.0)
    finally:
        handle.remove()
    assert batches == [3] * 4 + [1] * 4


@settings(max_examples=25, deadline=None)
@given(steps=st.integers(1, 60), strength=st.floats(0.0, 1.0), heun=st.booleans())
def test_strength_keeps_the_last_int_strength_times_n_steps(components, steps, strength, heun):
    name = "HeunDiscreteScheduler" if heun else "DDIMScheduler"
    scheduler = registry.get("scheduler", name).from_config(components["scheduler"].config)
    state = scheduler.plan(steps)
    run, kept = strength_timesteps(state, steps, strength, scheduler.order)
    assert kept == min(int(steps * strength), steps)
    assert state.begin_index == (steps - kept) * scheduler.order
    assert torch.equal(run, state.timesteps[len(state.timesteps) - len(run):])
    assert len(run) == (2 * kept - 1 if heun and kept else kept)  # Heun: two evaluations a step but the first
    assert scheduler.begin_index is None

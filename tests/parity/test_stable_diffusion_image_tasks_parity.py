"""Stable Diffusion image tasks against diffusers: img2img, inpainting (9- and 4-channel UNets), InstructPix2Pix.

diffusers builds and saves tiny random checkpoints (``sd_checkpoints``); diffkit loads them and must give
diffusers' images for the same call and generators (float32, max abs <= 1e-5, 32x32 px, 2-4 steps);
diffusers loads what diffkit saves.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sd_checkpoints import as_array, build_diffusers_sd  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffkit import DiffusionPipeline, registry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

ATOL = 1e-5
PROMPT = "a photo of a cat"


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load(folder: Path, **options):
    return _quiet(DiffusionPipeline.from_pretrained(folder, **options))


def _image(seed: int, height: int = 32, width: int = 32) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def _mask(height: int = 32, width: int = 32, box=(8, 4, 24, 20)) -> PIL.Image.Image:
    pixels = np.zeros((height, width), np.uint8)
    x1, y1, x2, y2 = box
    pixels[y1:y2, x1:x2] = 255
    return PIL.Image.fromarray(pixels)


def _assert_close(expected, got, atol=ATOL):
    a, b = as_array(expected), as_array(got)
    assert a.shape == b.shape
    diff = float(np.abs(a - b).max())
    assert diff <= atol, f"max abs diff {diff:.3e} > {atol:.0e}"
    return diff


def _siblings(reference, pipe, ref_class: str, scheduler: str | None = None, **overrides):
    """A diffusers ``ref_class`` and the diffkit class of the same name on the same components (``scheduler`` swapped)."""
    ref_components, kit_components = dict(reference.components), dict(pipe.components)
    if scheduler is not None:
        ref_scheduler = getattr(diffusers, scheduler).from_config(reference.scheduler.config, **overrides)
        ref_components["scheduler"] = ref_scheduler
        kit_components["scheduler"] = registry.get("scheduler", scheduler).from_config(dict(ref_scheduler.config))
    ref = _quiet(getattr(diffusers, ref_class)(**ref_components, requires_safety_checker=False))
    kit = _quiet(registry.get("pipeline", ref_class)(**kit_components, requires_safety_checker=False))
    return ref, kit


def _run_both(ref, kit, seed: int = 0, generators: int | None = None, **call):
    call = {"prompt": PROMPT, "num_inference_steps": 4, "output_type": "np", **call}

    def generator():
        if generators is None:
            return torch.Generator().manual_seed(seed)
        return [torch.Generator().manual_seed(seed + i) for i in range(generators)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref(generator=generator(), **call)
    got = kit(generator=generator(), **call)
    return expected, got


# -- img2img ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def text_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-img") / "tiny-sd"
    reference = build_diffusers_sd(folder)
    return reference, _load(folder), folder


IMG2IMG = [
    ("ddim-0.3", None, {}, {"strength": 0.3}),
    ("ddim-0.6", None, {}, {"strength": 0.6}),
    ("ddim-1.0", None, {}, {"strength": 1.0}),
    ("euler-0.3", "EulerDiscreteScheduler", {}, {"strength": 0.3}),
    ("euler-0.6", "EulerDiscreteScheduler", {}, {"strength": 0.6}),
    ("euler-1.0", "EulerDiscreteScheduler", {}, {"strength": 1.0}),
    ("dpm++-0.3", "DPMSolverMultistepScheduler", {}, {"strength": 0.3}),
    ("dpm++-0.6", "DPMSolverMultistepScheduler", {}, {"strength": 0.6}),
    ("dpm++-1.0", "DPMSolverMultistepScheduler", {}, {"strength": 1.0}),
    ("heun-0.6", "HeunDiscreteScheduler", {}, {"strength": 0.6}),
    ("euler-ancestral-batch", "EulerAncestralDiscreteScheduler", {},
     {"strength": 0.7, "prompt": ["a cat", "a dog"], "num_images_per_prompt": 2}),
    ("no-guidance", None, {}, {"strength": 0.5, "guidance_scale": 1.0}),
    ("generator-list", None, {}, {"strength": 0.5, "num_images_per_prompt": 2, "generators": 2}),
    ("numpy-image", None, {}, {"strength": 0.5, "image": "numpy"}),
    ("tensor-image", None, {}, {"strength": 0.5, "image": "tensor"}),
    ("image-list", None, {}, {"strength": 0.5, "image": "list", "prompt": ["a cat", "a dog"]}),
    ("not-a-multiple-pil", None, {}, {"strength": 0.5, "image": "odd-pil"}),
    ("not-a-multiple-tensor", None, {}, {"strength": 0.5, "image": "odd-tensor"}),
    ("custom-timesteps", "DPMSolverMultistepScheduler", {},
     {"strength": 0.5, "timesteps": [999, 800, 501, 201], "num_inference_steps": None}),
    ("output-latent", None, {}, {"strength": 0.5, "output_type": "latent"}),
]


def _img2img_image(kind: str):
    image = _image(1)
    pixels = np.asarray(image, dtype=np.float32) / 255.0
    return {
        "pil": image,
        "numpy": pixels[None],
        "tensor": torch.from_numpy(pixels).permute(2, 0, 1)[None],
        "list": [image, _image(2)],
        "odd-pil": _image(3, 27, 37),
        "odd-tensor": torch.from_numpy(np.asarray(_image(4, 29, 35), dtype=np.float32) / 255.0).permute(2, 0, 1),
    }[kind]


@pytest.mark.parametrize(("name", "scheduler", "overrides", "call"), IMG2IMG, ids=[g[0] for g in IMG2IMG])
def test_img2img_matches_diffusers(text_checkpoint, name, scheduler, overrides, call):
    reference, pipe, _ = text_checkpoint
    ref, kit = _siblings(reference, pipe, "StableDiffusionImg2ImgPipeline", scheduler, **overrides)
    call = dict(call)
    image = _img2img_image(call.pop("image", "pil"))
    expected, got = _run_both(ref, kit, image=image, **call)
    _assert_close(expected.images, got.images)


def test_img2img_state_lives_in_the_call(text_checkpoint):
    """The begin index of the schedule is never written on the scheduler object."""
    reference, pipe, _ = text_checkpoint
    _, kit = _siblings(reference, pipe, "StableDiffusionImg2ImgPipeline", "EulerDiscreteScheduler")
    kit(PROMPT, image=_image(1), strength=0.5, num_inference_steps=4, output_type="latent")
    assert kit.scheduler.begin_index is None


# -- inpainting ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inpaint_checkpoint(tmp_path_factory):
    """A 9-channel inpainting checkpoint saved by diffusers' StableDiffusionInpaintPipeline."""
    folder = tmp_path_factory.mktemp("sd-inpaint") / "tiny-sd-inpaint"
    reference = build_diffusers_sd(folder, unet={"in_channels": 9}, pipeline="StableDiffusionInpaintPipeline")
    return reference, _load(folder), folder


def _mask_as(kind: str, mask: PIL.Image.Image):
    values = np.asarray(mask, dtype=np.float32) / 255.0
    return {
        "pil": mask,
        "numpy": values,
        "numpy-batch": values[None, ..., None],
        "tensor": torch.from_numpy(values)[None, None],
        "tensor-hw": torch.from_numpy(values)[None],
        "blurred": diffusers.image_processor.VaeImageProcessor.blur(mask, 3),
    }[kind]


INPAINT = [
    ("pil", {}),
    ("numpy", {"mask": "numpy"}),
    ("numpy-batch", {"mask": "numpy-batch"}),
    ("tensor", {"mask": "tensor"}),
    ("tensor-hw", {"mask": "tensor-hw"}),
    ("strength-0.6", {"strength": 0.6}),
    ("euler-0.75", {"strength": 0.75, "scheduler": "EulerDiscreteScheduler"}),
    ("dpm++", {"scheduler": "DPMSolverMultistepScheduler"}),
    ("no-guidance-batch", {"guidance_scale": 1.0, "num_images_per_prompt": 2}),
    ("generator-list", {"strength": 0.8, "num_images_per_prompt": 2, "generators": 2}),
    ("padding-mask-crop", {"padding_mask_crop": 2, "output_type": "pil", "size": (40, 48)}),
    ("not-a-multiple", {"size": (29, 35), "height": 16, "width": 24}),
    ("masked-image-latents", {"masked_image_latents": True}),
    ("given-latents", {"latents": True}),
    ("blurred-mask", {"mask": "blurred"}),
]


@pytest.mark.parametrize("legacy", [False, True], ids=["9-channel", "4-channel"])
@pytest.mark.parametrize(("name", "call"), INPAINT, ids=[g[0] for g in INPAINT])
def test_inpaint_matches_diffusers(inpaint_checkpoint, text_checkpoint, legacy, name, call):
    reference, pipe, _ = text_checkpoint if legacy else inpaint_checkpoint
    call = dict(call)
    ref, kit = _siblings(reference, pipe, "StableDiffusionInpaintPipeline", call.pop("scheduler", None))
    height, width = call.pop("size", (32, 32))
    image = _image(5, height, width)
    mask = _mask_as(call.pop("mask", "pil"), _mask(height, width))
    if call.pop("masked_image_latents", False):
        call["masked_image_latents"] = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(9))
    if call.pop("latents", False):
        call["latents"] = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(10))
    call.setdefault("height", 32)
    call.setdefault("width", 32)
    if name == "padding-mask-crop":
        call.pop("height"), call.pop("width")
        call.update(height=16, width=16)
    expected, got = _run_both(ref, kit, image=image, mask_image=mask, **call)
    _assert_close(expected.images, got.images)


# -- InstructPix2Pix -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pix2pix_checkpoint(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sd-p2p") / "tiny-sd-pix2pix"
    reference = build_diffusers_sd(folder, unet={"in_channels": 8}, pipeline="StableDiffusionInstructPix2PixPipeline")
    return reference, _load(folder), folder


PIX2PIX = [
    ("text-and-image-cfg", None, {}),
    ("image-scale-2", None, {"image_guidance_scale": 2.0, "guidance_scale": 5.0}),
    ("no-text-cfg", None, {"guidance_scale": 1.0}),
    ("image-scale-below-1", None, {"image_guidance_scale": 0.5}),
    ("negative-batch", "EulerAncestralDiscreteScheduler",
     {"prompt": ["make it red", "make it blue"], "negative_prompt": ["ugly", "dark"], "num_images_per_prompt": 2}),
    ("not-a-multiple", "EulerDiscreteScheduler", {"image": "odd"}),
]


@pytest.mark.parametrize(("name", "scheduler", "call"), PIX2PIX, ids=[g[0] for g in PIX2PIX])
def test_instruct_pix2pix_matches_diffusers(pix2pix_checkpoint, name, scheduler, call):
    reference, pipe, _ = pix2pix_checkpoint
    ref, kit = _siblings(reference, pipe, "StableDiffusionInstructPix2PixPipeline", scheduler)
    call = dict(call)
    image = _image(8, 27, 37) if call.pop("image", None) == "odd" else _image(8)
    expected, got = _run_both(ref, kit, image=image, num_inference_steps=3, **call)
    _assert_close(expected.images, got.images)


# -- diffusers loads what diffkit saves ------------------------------------------------------------------
ROUND_TRIP = [
    ("StableDiffusionImg2ImgPipeline", "text_checkpoint", {"strength": 0.6}),
    ("StableDiffusionInpaintPipeline", "inpaint_checkpoint", {"mask_image": "mask", "strength": 0.9}),
    ("StableDiffusionInstructPix2PixPipeline", "pix2pix_checkpoint", {}),
]


@pytest.mark.parametrize(("name", "fixture", "call"), ROUND_TRIP, ids=[r[0] for r in ROUND_TRIP])
def test_diffusers_loads_what_diffkit_saves(request, tmp_path, name, fixture, call):
    _, pipe, _ = request.getfixturevalue(fixture)
    kit = _quiet(registry.get("pipeline", name)(**pipe.components, requires_safety_checker=False))
    kit.save_pretrained(tmp_path / "saved")
    ref = _quiet(getattr(diffusers, name).from_pretrained(tmp_path / "saved"))
    assert type(ref).__name__ == name
    call = dict(call)
    if call.pop("mask_image", None):
        call["mask_image"] = _mask()
    expected, got = _run_both(ref, kit, image=_image(11), height=32, width=32, **call) if "Inpaint" in name else \
        _run_both(ref, kit, image=_image(11), **call)
    _assert_close(expected.images, got.images)


# -- AutoPipeline ----------------------------------------------------------------------------------------
def _parameter_bytes(*pipes) -> int:
    """Bytes of the distinct tensor storages behind every parameter and buffer of the pipelines' modules."""
    seen: dict[int, int] = {}
    for pipe in pipes:
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in [*component.parameters(), *component.buffers()]:
                    storage = tensor.untyped_storage()
                    seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def test_auto_pipelines_pick_the_task_class_for_a_checkpoint(text_checkpoint, inpaint_checkpoint):
    from diffkit import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    text_folder, inpaint_folder = text_checkpoint[2], inpaint_checkpoint[2]
    assert type(AutoPipelineForImage2Image.from_pretrained(text_folder)).__name__ == "StableDiffusionImg2ImgPipeline"
    assert type(AutoPipelineForInpainting.from_pretrained(text_folder)).__name__ == "StableDiffusionInpaintPipeline"
    assert type(AutoPipelineForText2Image.from_pretrained(inpaint_folder)).__name__ == "StableDiffusionPipeline"
    inpaint = AutoPipelineForInpainting.from_pretrained(inpaint_folder, torch_dtype=torch.float32)
    assert type(inpaint).__name__ == "StableDiffusionInpaintPipeline" and inpaint.unet.config.in_channels == 9


def test_from_pipe_shares_components_and_matches_diffusers(text_checkpoint):
    from diffkit import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    reference, pipe, _ = text_checkpoint
    before = _parameter_bytes(pipe)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    inpaint = AutoPipelineForInpainting.from_pipe(img2img)
    back = AutoPipelineForText2Image.from_pipe(inpaint)
    assert [type(p).__name__ for p in (img2img, inpaint, back)] == [
        "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline", "StableDiffusionPipeline"]
    for sibling in (img2img, inpaint, back):
        assert all(sibling.components[name] is component for name, component in pipe.components.items())
    # no new parameter memory: the four pipelines hold exactly the storages of the first
    assert _parameter_bytes(pipe, img2img, inpaint, back) == before > 0
    ref = _quiet(diffusers.AutoPipelineForImage2Image.from_pipe(reference))
    expected, got = _run_both(ref, img2img, image=_image(12), strength=0.5)
    _assert_close(expected.images, got.images)


@pytest.mark.parametrize(
    ("fixture", "name", "tensors", "extra"),
    [
        ("inpaint_checkpoint", "StableDiffusionInpaintPipeline", ["latents", "mask", "masked_image_latents"],
         {"mask_image": "mask", "height": 32, "width": 32}),
        ("pix2pix_checkpoint", "StableDiffusionInstructPix2PixPipeline", ["latents", "prompt_embeds", "image_latents"],
         {}),
    ],
    ids=["inpaint", "pix2pix"],
)
def test_step_callbacks_see_diffusers_tensors(request, fixture, name, tensors, extra):
    reference, pipe, _ = request.getfixturevalue(fixture)
    ref, kit = _siblings(reference, pipe, name)
    if extra.pop("mask_image", None):
        extra["mask_image"] = _mask()
    seen: dict[str, list] = {"ref": [], "kit": []}

    def recorder(key):
        def callback(_pipe, step, _t, kwargs):
            seen[key].append({k: v.clone() for k, v in kwargs.items()})
            return {"latents": kwargs["latents"] * 0.99}  # what a callback returns is used
        return callback

    call = {"image": _image(13), "callback_on_step_end_tensor_inputs": tensors, **extra}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = ref(PROMPT, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(1),
                       callback_on_step_end=recorder("ref"), **call)
    got = kit(PROMPT, num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(1),
              callback_on_step_end=recorder("kit"), **call)
    assert len(seen["ref"]) == len(seen["kit"]) == 3
    for ours, theirs in zip(seen["kit"], seen["ref"], strict=True):
        assert set(ours) == set(theirs) == set(tensors)
        for key in tensors:
            # latents reach |x| ~ 8 here: 1e-5 relative to their size (the images below are held to 1e-5 absolute)
            _assert_close(theirs[key], ours[key], atol=ATOL * max(1.0, float(theirs[key].abs().max())))
    _assert_close(expected.images, got.images)


def test_an_instruct_pix2pix_checkpoint_maps_to_no_other_task(pix2pix_checkpoint):
    """Its 8-channel UNet works only with its own pipeline (diffusers' AutoPipelines do not map it either)."""
    from diffkit import AutoPipelineForImage2Image

    with pytest.raises(ValueError, match="no installed pipeline does image-to-image for the "
                                         "'stable-diffusion-instruct-pix2pix' family"):
        AutoPipelineForImage2Image.from_pretrained(pix2pix_checkpoint[2])
    with pytest.raises(ValueError):
        diffusers.AutoPipelineForImage2Image.from_pretrained(pix2pix_checkpoint[2])

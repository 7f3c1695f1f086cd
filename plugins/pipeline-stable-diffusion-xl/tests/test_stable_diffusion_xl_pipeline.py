"""SDXL pipelines without diffusers: registration, the float32 VAE decode, the watermark switch, bad input, CLI.

Parity with diffusers is in ``tests/parity/test_stable_diffusion_xl_parity.py``.
"""

from __future__ import annotations

import importlib.machinery
import logging
import subprocess
import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit import registry
from diffkit_pipeline_stable_diffusion_xl import hooks, watermark
from diffkit_pipeline_stable_diffusion_xl.micro_conditioning import refiner_start, steps_before_end

CALL = dict(num_inference_steps=2, height=32, width=32, output_type="np")
NAMES = ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline", "StableDiffusionXLInpaintPipeline")


def _seed(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _image(seed: int = 3) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8))


def _mask() -> PIL.Image.Image:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:24, 8:24] = 255
    return PIL.Image.fromarray(mask)


def _sibling(pipe, name: str, **settings):
    other = registry.get("pipeline", name)(**pipe.components, add_watermarker=False, **settings)
    other.set_progress_bar_config(disable=True)
    return other


# -- registration ------------------------------------------------------------------------
def test_hook_registers_the_three_tasks_of_the_family(diffkit_registry):
    from diffkit.testing import plugin

    with plugin(hooks, dist="diffkit-pipeline-stable-diffusion-xl"):
        classes = [registry.get("pipeline", name) for name in NAMES]
    assert [c.__name__ for c in classes] == list(NAMES)
    assert classes[0].component_names() == [
        "feature_extractor", "image_encoder", "scheduler", "text_encoder", "text_encoder_2", "tokenizer",
        "tokenizer_2", "unet", "vae",
    ]
    assert classes[0].parameter_names() == ["add_watermarker", "force_zeros_for_empty_prompt"]
    assert classes[1].parameter_names() == classes[2].parameter_names() == [
        "add_watermarker", "force_zeros_for_empty_prompt", "requires_aesthetics_score",
    ]


def test_registration_carries_task_and_family():
    recorded = []
    hooks.register_pipelines(lambda name, target, **meta: recorded.append((name, meta)))
    assert recorded == [
        ("StableDiffusionXLPipeline", {"task": "text-to-image", "family": "stable-diffusion-xl"}),
        ("StableDiffusionXLImg2ImgPipeline", {"task": "image-to-image", "family": "stable-diffusion-xl"}),
        ("StableDiffusionXLInpaintPipeline", {"task": "inpainting", "family": "stable-diffusion-xl"}),
    ]


def test_importing_the_hooks_and_package_leaves_torch_unimported():
    code = ("import sys, diffkit_pipeline_stable_diffusion_xl, diffkit_pipeline_stable_diffusion_xl.hooks; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the VAE in float16 ------------------------------------------------------------------
def _overflowing_vae(components, force_upcast: bool):
    """A float16 VAE whose decoder input conv overflows float16 (~1e5 activations); float32 copes."""
    vae = components["vae"]
    broken = type(vae).from_config({**dict(vae.config), "force_upcast": force_upcast})
    broken.load_state_dict(vae.state_dict())
    with torch.no_grad():
        broken.decoder.conv_in.weight.mul_(1e5)
    return broken.to(torch.float16).eval()


def test_float16_vae_with_force_upcast_decodes_in_float32_without_touching_the_shared_vae(pipe, components):
    vae = _overflowing_vae(components, force_upcast=True)
    fp16 = type(pipe)(**{**pipe.components, "vae": vae}, add_watermarker=False)
    fp16.set_progress_bar_config(disable=True)
    latents = fp16("a cat", generator=_seed(), **{**CALL, "output_type": "latent"}).images
    with torch.no_grad():
        direct = vae.decode(latents.half() / vae.config.scaling_factor, return_dict=False)[0]
    assert not torch.isfinite(direct).all()  # the overflow is real in float16
    images = fp16("a cat", generator=_seed(), **CALL).images
    assert np.isfinite(images).all() and images.std() > 0
    assert vae.dtype == torch.float16  # a float32 copy decoded; the component is unchanged
    reference = type(vae).from_config(vae.config)
    reference.load_state_dict({k: v.float() for k, v in vae.state_dict().items()})
    with torch.no_grad():
        expected = reference.decode(latents / vae.config.scaling_factor, return_dict=False)[0]
    expected = (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert np.abs(expected - images).max() < 1e-5


def test_float16_vae_without_force_upcast_that_overflows_decodes_again_with_a_warning(pipe, components, caplog):
    vae = _overflowing_vae(components, force_upcast=False)
    fp16 = type(pipe)(**{**pipe.components, "vae": vae}, add_watermarker=False)
    fp16.set_progress_bar_config(disable=True)
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline.stable_diffusion_xl"):
        images = fp16("a cat", generator=_seed(), **CALL).images
    assert np.isfinite(images).all() and images.std() > 0
    assert "overflowed" in caplog.text and "force_upcast" in caplog.text


# -- the watermark -----------------------------------------------------------------------
def test_watermark_is_off_and_reported_when_the_package_is_missing(components, caplog, monkeypatch):
    from diffkit_pipeline_stable_diffusion_xl.text_to_image import StableDiffusionXLPipeline

    monkeypatch.setattr(watermark, "watermark_available", lambda: False)
    monkeypatch.setattr(watermark, "_reported", [])
    monkeypatch.setitem(sys.modules, "imwatermark", None)  # an import now fails as if not installed
    args = {k: v for k, v in components.items() if k != "add_watermarker"}
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline.stable_diffusion_xl"):
        first = StableDiffusionXLPipeline(**args)
        StableDiffusionXLPipeline(**args)
    assert first.watermark is None
    assert caplog.text.count("not watermarked") == 1 and "[watermark]" in caplog.text
    with pytest.raises(ImportError, match=r"invisible-watermark.*\[watermark\]"):
        StableDiffusionXLPipeline(**args, add_watermarker=True)
    assert StableDiffusionXLPipeline(**args, add_watermarker=False).watermark is None


def test_watermark_goes_through_the_encoder_on_images_of_256_px_and_more(monkeypatch):
    calls = []

    class Encoder:
        def set_watermark(self, kind, bits):
            calls.append((kind, bits))

        def encode(self, image, method):
            calls.append(method)
            assert image.shape[-1] == 3
            return image[..., ::-1] * 0 + 255  # white, BGR

    fake = types.ModuleType("imwatermark")
    fake.WatermarkEncoder = Encoder
    fake.__spec__ = importlib.machinery.ModuleSpec("imwatermark", None)
    monkeypatch.setitem(sys.modules, "imwatermark", fake)
    marker = watermark.make_watermarker(None, "test")
    assert calls == [("bits", watermark.BITS)] and len(watermark.BITS) == 48
    small = torch.zeros(1, 3, 32, 32)
    assert marker.apply_watermark(small) is small
    marked = marker.apply_watermark(torch.zeros(2, 3, 8, 256))
    assert calls[1:] == ["dwtDct", "dwtDct"] and marked.shape == (2, 3, 8, 256) and bool((marked == 1).all())


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "arguments", "words"),
    [
        ("StableDiffusionXLPipeline", {"prompt": "a", "prompt_2": "b", "prompt_embeds": torch.zeros(1, 77, 64)},
         ["prompt"]),
        ("StableDiffusionXLPipeline", {"prompt_embeds": torch.zeros(1, 77, 64)}, ["pooled_prompt_embeds"]),
        ("StableDiffusionXLPipeline", {"prompt": "a", "prompt_2": 3}, ["prompt_2"]),
        ("StableDiffusionXLPipeline", {"prompt": "a", "clip_skip": 5}, ["clip_skip"]),
        ("StableDiffusionXLPipeline", {"prompt": "a", "callback_on_step_end_tensor_inputs": ["mask"]},
         ["callback_on_step_end_tensor_inputs", "mask"]),
        ("StableDiffusionXLImg2ImgPipeline", {"prompt": "a", "image": None}, ["image"]),
        ("StableDiffusionXLImg2ImgPipeline", {"prompt": "a", "image": _image(), "strength": 1.5}, ["strength"]),
        ("StableDiffusionXLImg2ImgPipeline", {"prompt": "a", "image": _image(), "strength": 0.1},
         ["strength", "no denoising step"]),
        ("StableDiffusionXLImg2ImgPipeline",
         {"prompt": "a", "image": _image(), "denoising_start": 0.8, "denoising_end": 0.5}, ["denoising_start"]),
        ("StableDiffusionXLInpaintPipeline", {"prompt": "a", "image": _image()}, ["mask_image"]),
        ("StableDiffusionXLInpaintPipeline", {"prompt": "a", "image": _image(), "mask_image": _mask(),
                                              "padding_mask_crop": 2}, ["padding_mask_crop", "output_type='pil'"]),
    ],
    ids=["prompt-2-and-embeds", "embeds-without-pooled", "prompt-2-type", "clip-skip", "callback-inputs",
         "no-image", "strength", "no-step-left", "start-after-end", "no-mask", "mask-crop-output"],
)
def test_bad_call_arguments_name_the_argument(pipe, name, arguments, words):
    sibling = _sibling(pipe, name)
    call = {k: v for k, v in CALL.items() if name == "StableDiffusionXLPipeline" or k not in ("height", "width")}
    with pytest.raises(ValueError) as info:
        sibling(**{**call, **arguments})
    assert all(word in str(info.value) for word in words), str(info.value)


def test_a_refiner_setting_on_a_base_unet_says_which_setting(pipe):
    refiner_style = _sibling(pipe, "StableDiffusionXLImg2ImgPipeline", requires_aesthetics_score=True)
    with pytest.raises(ValueError, match="requires_aesthetics_score=False"):
        refiner_style("a cat", image=_image(), strength=0.8, num_inference_steps=2, output_type="np")


def test_text_encoders_that_do_not_fit_the_unet_are_refused(components):
    from diffkit_pipeline_stable_diffusion_xl.text_to_image import StableDiffusionXLPipeline

    with pytest.raises(ValueError, match="cross_attention_dim=64"):
        StableDiffusionXLPipeline(**{**components, "text_encoder": None})


# -- tasks on one set of components --------------------------------------------------------
def test_the_three_tasks_share_components_and_run(pipe):
    text = pipe("a cat", generator=_seed(), **CALL).images
    redrawn = _sibling(pipe, "StableDiffusionXLImg2ImgPipeline")(
        "a cat", image=_image(), strength=0.5, generator=_seed(), num_inference_steps=4, output_type="np").images
    inpainted = _sibling(pipe, "StableDiffusionXLInpaintPipeline")(
        "a cat", image=_image(), mask_image=_mask(), generator=_seed(), **CALL).images
    assert text.shape == redrawn.shape == inpainted.shape == (1, 32, 32, 3)
    assert all(np.isfinite(a).all() for a in (text, redrawn, inpainted))


def test_return_dict_false_gives_a_one_tuple(pipe):
    (images,) = pipe("a cat", generator=_seed(), return_dict=False, **CALL)
    assert images.shape == (1, 32, 32, 3)


# -- the CLI ---------------------------------------------------------------------------
def test_diffkit_generate_runs_an_xl_checkpoint(pipe, tmp_path):
    from diffkit import cli

    pipe.save_pretrained(tmp_path / "sdxl")
    _image().save(tmp_path / "image.png")
    _mask().save(tmp_path / "mask.png")
    common = ["--steps", "2", "--seed", "0", "--device", "cpu"]
    assert cli.main(["generate", str(tmp_path / "sdxl"), "--prompt", "a cat", "--negative-prompt", "blurry",
                     "--guidance-scale", "6", "--height", "32", "--width", "32", *common,
                     "--output", str(tmp_path / "text.png")]) == 0
    # the image options pick the family's task pipeline: inpainting with a mask, img2img without
    assert cli.main(["generate", str(tmp_path / "sdxl"), "--prompt", "a cat", "--image", str(tmp_path / "image.png"),
                     "--mask-image", str(tmp_path / "mask.png"), *common,
                     "--output", str(tmp_path / "inpaint.png")]) == 0
    assert cli.main(["generate", str(tmp_path / "sdxl"), "--prompt", "a cat", "--image", str(tmp_path / "image.png"),
                     "--strength", "0.6", *common, "--output", str(tmp_path / "img2img.png")]) == 0
    for name in ("text.png", "inpaint.png", "img2img.png"):
        with PIL.Image.open(tmp_path / name) as written:
            assert written.size == (32, 32)


# -- schedule hand-over ------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.floats(0.01, 0.99), st.integers(1, 1000))
def test_base_and_refiner_split_the_plan_into_complementary_parts(steps, fraction, top):
    """With the same fraction as denoising_end and denoising_start, every step runs exactly once."""
    timesteps = torch.linspace(top, 0, steps).round().long()
    base = steps_before_end(timesteps, fraction, 1000)
    assert refiner_start(timesteps, fraction, 1000, order=1) == base



# -- per-call state -------------------------------------------------------------------------
def test_each_image_of_a_batch_is_its_own_single_run_with_negative_sizes(pipe):
    """The negative time ids follow the negative half of the batch. (diffusers 0.42.1's text-to-image pairs them
    as [neg, pos, neg, pos] against embeddings [neg, neg, pos, pos] when the negative sizes differ and the batch
    is larger than one; its img2img and inpainting pipelines pair them as here.)"""
    call = {**CALL, "negative_original_size": (16, 16), "negative_target_size": (8, 24), "guidance_scale": 6.0}
    both = pipe(["a cat", "a dog"], generator=[_seed(0), _seed(1)], **call).images
    cat = pipe("a cat", generator=_seed(0), **call).images
    dog = pipe("a dog", generator=_seed(1), **call).images
    assert np.abs(both - np.concatenate([cat, dog])).max() < 1e-5


def test_threads_sharing_one_pipeline_get_their_sequential_images(pipe, components):
    from concurrent.futures import ThreadPoolExecutor

    vae16 = type(components["vae"]).from_config(components["vae"].config)
    vae16.load_state_dict(components["vae"].state_dict())
    shared = type(pipe)(**{**pipe.components, "vae": vae16.half()}, add_watermarker=False)  # upcast on every decode
    shared.set_progress_bar_config(disable=True)
    jobs = [("a cat", 0, 1.0, 2), ("a red dog", 1, 6.0, 3), ("a house", 2, 3.0, 2), ("a tree", 3, 9.0, 3)]

    def run(job):
        prompt, seed, scale, steps = job
        return shared(prompt, generator=_seed(seed), guidance_scale=scale, num_inference_steps=steps, height=32,
                      width=32, output_type="np", denoising_end=0.9 if steps == 3 else None).images

    sequential = [run(job) for job in jobs]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, jobs))
    for one, other in zip(sequential, concurrent, strict=True):
        assert np.array_equal(one, other)


@pytest.mark.parametrize("strategy", ["model", "sequential"])
def test_offload_gives_the_same_images_with_a_float16_vae(pipe, components, strategy):
    """The float32 VAE copy is built from the weights, so offload hooks on the shared VAE do not get in the way."""
    vae16 = type(components["vae"]).from_config(components["vae"].config)
    vae16.load_state_dict(components["vae"].state_dict())
    inpaint = registry.get("pipeline", "StableDiffusionXLInpaintPipeline")(
        **{**pipe.components, "vae": vae16.half()}, add_watermarker=False
    )
    inpaint.set_progress_bar_config(disable=True)
    call = dict(prompt="a cat", image=_image(), mask_image=_mask(), **CALL)
    plain = inpaint(generator=_seed(), **call).images
    inpaint.enable_offload(strategy, device="cpu")
    try:
        offloaded = inpaint(generator=_seed(), **call).images
    finally:
        inpaint.disable_offload()
    assert np.array_equal(plain, offloaded)


def test_auto_pipelines_map_an_xl_checkpoint_to_its_tasks(pipe, tmp_path):
    from diffkit import AutoPipelineForImage2Image, AutoPipelineForInpainting, AutoPipelineForText2Image

    pipe.save_pretrained(tmp_path / "sdxl")
    redraw = AutoPipelineForImage2Image.from_pretrained(tmp_path / "sdxl")
    assert type(redraw).__name__ == "StableDiffusionXLImg2ImgPipeline"
    inpaint = AutoPipelineForInpainting.from_pipe(pipe)
    assert type(inpaint).__name__ == "StableDiffusionXLInpaintPipeline"
    assert all(getattr(inpaint, name) is component for name, component in pipe.components.items())
    assert type(AutoPipelineForText2Image.from_pipe(inpaint)) is type(pipe)

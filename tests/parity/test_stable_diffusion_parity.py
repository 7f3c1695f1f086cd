"""StableDiffusionPipeline parity: diffusers builds and saves tiny random SD checkpoints, diffkit loads them
and gives diffusers' images for the same call and generator; diffusers loads what diffkit saves.

Float32 tolerance 1e-5 (max abs, images in [0, 1] or latents); float16 on the CPU 1e-2 (measured 1.5e-3; the two
libraries round fp16 intermediates at different places). Every call is 32x32 px with 2-3 steps.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sd_checkpoints import as_array, build_diffusers_sd  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffkit import DiffusionPipeline, registry  # noqa: E402

# diffusers' KDPM2 schedulers run numpy on tensors: thousands of numpy 2 deprecation warnings per call
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")

ATOL = 1e-5
ATOL_FP16 = 1e-2
PROMPT = "a photo of a cat"


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _load(folder: Path, **options):
    pipe = DiffusionPipeline.from_pretrained(folder, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(diffusers pipeline, diffkit pipeline loaded from what diffusers saved, folder)."""
    folder = tmp_path_factory.mktemp("sd") / "tiny-sd"
    reference = build_diffusers_sd(folder)
    return reference, _load(folder), folder


def _with_scheduler(reference, pipe, name: str | None, **overrides):
    """Siblings of both pipelines (shared weights) with scheduler ``name`` built from the checkpoint's config."""
    if name is None:
        return reference, pipe
    ref_scheduler = getattr(diffusers, name).from_config(reference.scheduler.config, **overrides)
    kit_scheduler = registry.get("scheduler", name).from_config(dict(ref_scheduler.config))
    ref = type(reference)(**{**reference.components, "scheduler": ref_scheduler}, requires_safety_checker=False)
    kit = type(pipe)(**{**pipe.components, "scheduler": kit_scheduler}, **pipe.settings)
    ref.set_progress_bar_config(disable=True)
    kit.set_progress_bar_config(disable=True)
    return ref, kit


def _generators(seed, count: int | None):
    if count is None:
        return torch.Generator().manual_seed(seed)
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _run_both(reference, pipe, seed: int = 0, generators: int | None = None, **call):
    call = {"prompt": PROMPT, "num_inference_steps": 3, "height": 32, "width": 32, "output_type": "np", **call}
    # each side gets its own copy: diffusers pops "scale" out of the caller's cross_attention_kwargs
    expected = reference(generator=_generators(seed, generators), **copy.deepcopy(call))
    got = pipe(generator=_generators(seed, generators), **copy.deepcopy(call))
    return expected, got


def _assert_close(expected, got, atol=ATOL):
    a, b = as_array(expected), as_array(got)
    assert a.shape == b.shape
    diff = float(np.abs(a - b).max())
    assert diff <= atol, f"max abs diff {diff:.3e} > {atol:.0e}"
    return diff


GRID = [
    # id, scheduler (None: the checkpoint's DDIM), scheduler overrides, call arguments
    ("prompt", None, {}, {}),
    ("negative-prompt", None, {}, {"negative_prompt": "blurry ugly"}),
    ("batch-per-prompt", None, {}, {"prompt": ["a cat", "a red dog"], "negative_prompt": ["ugly", "low quality"],
                                    "num_images_per_prompt": 2}),
    ("no-guidance", None, {}, {"guidance_scale": 1.0}),
    ("guidance-rescale", None, {}, {"guidance_scale": 9.0, "guidance_rescale": 0.7}),
    ("ddim-eta", None, {}, {"eta": 0.8}),
    ("default-size", None, {}, {"height": None, "width": None}),
    ("pndm", "PNDMScheduler", {"skip_prk_steps": True}, {}),
    ("euler-ancestral", "EulerAncestralDiscreteScheduler", {}, {"num_images_per_prompt": 2}),
    ("dpm++2m", "DPMSolverMultistepScheduler", {}, {}),
    ("dpm++2m-sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, {}),
    ("unipc", "UniPCMultistepScheduler", {}, {}),
    ("lcm", "LCMScheduler", {}, {"num_inference_steps": 2}),
    ("lms", "LMSDiscreteScheduler", {}, {}),
    ("euler-karras", "EulerDiscreteScheduler", {"use_karras_sigmas": True}, {}),
    ("heun", "HeunDiscreteScheduler", {}, {}),
    ("kdpm2-ancestral", "KDPM2AncestralDiscreteScheduler", {}, {}),
    ("dpm-sde", "DPMSolverSDEScheduler", {"noise_sampler_seed": 7}, {}),
    ("dpm-singlestep", "DPMSolverSinglestepScheduler", {}, {}),
    ("deis", "DEISMultistepScheduler", {}, {}),
    ("ddpm", "DDPMScheduler", {}, {}),
    ("tcd", "TCDScheduler", {}, {"num_inference_steps": 2, "eta": 0.3}),
    ("custom-timesteps", "DPMSolverMultistepScheduler", {},
     {"timesteps": [999, 601, 211], "num_inference_steps": None}),
    ("custom-sigmas", "EulerDiscreteScheduler", {}, {"sigmas": [14.6, 4.1, 0.9], "num_inference_steps": None}),
    ("output-pt", None, {}, {"output_type": "pt"}),
    ("output-latent", None, {}, {"output_type": "latent"}),
    ("output-pil", None, {}, {"output_type": "pil"}),
]


@pytest.mark.parametrize(("scheduler", "overrides", "call"), [g[1:] for g in GRID], ids=[g[0] for g in GRID])
def test_images_match_diffusers(checkpoint, scheduler, overrides, call):
    reference, pipe, _ = checkpoint
    reference, pipe = _with_scheduler(reference, pipe, scheduler, **overrides)
    call = dict(call)
    if call.get("num_inference_steps", 0) is None:
        del call["num_inference_steps"]
    prompts = call.get("prompt")
    generators = len(prompts) * call.get("num_images_per_prompt", 1) if isinstance(prompts, list) else None
    expected, got = _run_both(reference, pipe, generators=generators, **call)
    # PIL images are uint8: allow one rounding step where float32 noise sits on a boundary
    _assert_close(expected.images, got.images, atol=1.0 if call.get("output_type") == "pil" else ATOL)
    assert got.nsfw_content_detected is None and expected.nsfw_content_detected is None


def test_a_unet_that_embeds_the_guidance_scale_matches(tmp_path):
    """LCM-distilled UNets (``time_cond_proj_dim``) get the scale as an embedding and no CFG batch."""
    reference = build_diffusers_sd(tmp_path / "lcm", unet={"time_cond_proj_dim": 8})
    pipe = _load(tmp_path / "lcm")
    reference, pipe = _with_scheduler(reference, pipe, "LCMScheduler")
    expected, got = _run_both(reference, pipe, guidance_scale=6.0, num_inference_steps=2)
    _assert_close(expected.images, got.images)
    other = pipe(PROMPT, guidance_scale=2.0, num_inference_steps=2, height=32, width=32, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    assert np.abs(other - got.images).max() > 1e-5  # the scale reaches the UNet


def test_cross_attention_scale_without_lora_changes_nothing(checkpoint):
    """``cross_attention_kwargs={"scale": s}`` scales LoRA layers only; with none loaded the images stay
    diffusers' plain ones. (diffusers 0.42.1 itself fails on it under transformers 5: its LoRA unscaling
    looks for the text encoder's ``text_model``.)"""
    reference, pipe, _ = checkpoint
    call = {"num_inference_steps": 3, "height": 32, "width": 32, "output_type": "np"}
    expected = reference(PROMPT, generator=torch.Generator().manual_seed(0), **call).images
    got = pipe(PROMPT, cross_attention_kwargs={"scale": 0.5}, generator=torch.Generator().manual_seed(0), **call).images
    _assert_close(expected, got)


def test_the_prompt_changes_the_image(checkpoint):
    """Guards the grid above: the tiny models are not so degenerate that every prompt gives one image."""
    _, pipe, _ = checkpoint
    cat = pipe(PROMPT, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    dog = pipe("a big dog", num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").images
    assert np.abs(cat - dog).max() > 1e-3


def test_prompt_embeds_input_matches(checkpoint):
    reference, pipe, _ = checkpoint
    tokens = reference.tokenizer([PROMPT, "a dog"], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        embeds = reference.text_encoder(tokens.input_ids)[0]
    expected, got = _run_both(
        reference, pipe, prompt=None, prompt_embeds=embeds, negative_prompt_embeds=embeds.flip(0) * 0.5,
        generators=2,
    )
    _assert_close(expected.images, got.images)


def test_clip_skip_matches_hand_computed_embeddings(checkpoint):
    """diffusers 0.42.1 cannot clip_skip a transformers-5 CLIPTextModel (AttributeError on ``text_model``),
    so its side gets the embeddings that clip_skip=1 means, computed by hand."""
    reference, pipe, _ = checkpoint
    tokens = reference.tokenizer([PROMPT], padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        hidden = reference.text_encoder(tokens.input_ids, output_hidden_states=True).hidden_states[-2]
        skipped = reference.text_encoder.final_layer_norm(hidden)
    call = {"num_inference_steps": 3, "height": 32, "width": 32, "output_type": "np"}
    expected = reference(prompt_embeds=skipped, generator=torch.Generator().manual_seed(0), **call).images
    got = pipe(PROMPT, clip_skip=1, generator=torch.Generator().manual_seed(0), **call).images
    _assert_close(expected, got)
    plain = pipe(PROMPT, generator=torch.Generator().manual_seed(0), **call).images
    assert np.abs(plain - got).max() > 1e-4


def test_vae_slicing_and_tiling_match(checkpoint):
    """diffusers 0.42.1 dropped the pipeline-level toggles: its VAE gets them directly."""
    reference, pipe, _ = checkpoint
    reference.vae.enable_slicing(), reference.vae.enable_tiling()
    pipe.enable_vae_slicing(), pipe.enable_vae_tiling()
    try:
        # 64 px: 32x32 latents, larger than the tiny VAE's 16-latent tiles, so tiling really tiles
        expected, got = _run_both(reference, pipe, prompt=["a cat", "a dog"], height=64, width=64, generators=2)
        _assert_close(expected.images, got.images)
    finally:
        reference.vae.disable_slicing(), reference.vae.disable_tiling()
        pipe.disable_vae_slicing(), pipe.disable_vae_tiling()


def test_callback_on_step_end_matches(checkpoint):
    reference, pipe, _ = checkpoint

    def make_callback(seen):
        def callback(_pipe, step, timestep, tensors):
            seen.append((step, int(timestep), sorted(tensors)))
            if step == 0:
                tensors["latents"] = tensors["latents"] * 0.5
                tensors["prompt_embeds"] = tensors["prompt_embeds"] * 0.9
            return tensors
        return callback

    seen_ref: list = []
    seen_kit: list = []
    inputs = ["latents", "prompt_embeds"]
    call = {"prompt": PROMPT, "num_inference_steps": 3, "height": 32, "width": 32, "output_type": "np",
            "callback_on_step_end_tensor_inputs": inputs}
    expected = reference(generator=_generators(0, None), callback_on_step_end=make_callback(seen_ref), **call)
    got = pipe(generator=_generators(0, None), callback_on_step_end=make_callback(seen_kit), **call)
    assert seen_kit == seen_ref and len(seen_kit) == 3
    _assert_close(expected.images, got.images)


def test_return_dict_false_gives_images_and_flags(checkpoint):
    _, pipe, _ = checkpoint
    images, flagged = pipe(PROMPT, num_inference_steps=2, output_type="np", return_dict=False,
                           generator=torch.Generator().manual_seed(0))
    assert images.shape == (1, 32, 32, 3) and flagged is None
    out = pipe(PROMPT, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0))
    assert list(out.keys()) == ["images"] and np.array_equal(out["images"], images)


def test_float16_on_cpu_matches_loosely(checkpoint):
    _, _, folder = checkpoint
    reference = diffusers.StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16)
    reference.set_progress_bar_config(disable=True)
    try:
        expected = reference(PROMPT, num_inference_steps=2, height=32, width=32, output_type="np",
                             generator=torch.Generator().manual_seed(0))
    except RuntimeError as exc:  # older CPU kernels lack some float16 ops
        pytest.skip(f"this torch build cannot run the model in float16 on the CPU: {exc}")
    pipe = _load(folder, torch_dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.text_encoder.dtype == torch.float16
    got = pipe(PROMPT, num_inference_steps=2, height=32, width=32, output_type="np",
               generator=torch.Generator().manual_seed(0))
    _assert_close(expected.images, got.images, atol=ATOL_FP16)


@pytest.fixture(scope="module")
def checker_checkpoints(tmp_path_factory):
    """``mode -> (diffusers pipeline, diffkit pipeline, folder)`` with a safety checker, built once per mode."""
    built: dict[str, tuple] = {}

    def get(mode: str):
        if mode not in built:
            folder = tmp_path_factory.mktemp(f"sd-{mode}") / "tiny-sd"
            built[mode] = (build_diffusers_sd(folder, safety_checker=mode), _load(folder), folder)
        return built[mode]

    return get


@pytest.mark.parametrize("mode", ["pass", "flag"])
def test_safety_checker_matches(checker_checkpoints, mode):
    reference, pipe, _ = checker_checkpoints(mode)
    assert type(pipe.safety_checker).__name__ == "StableDiffusionSafetyChecker"
    expected, got = _run_both(reference, pipe, prompt=["a cat", "a dog"], generators=2)
    assert got.nsfw_content_detected == expected.nsfw_content_detected == [mode == "flag"] * 2
    _assert_close(expected.images, got.images)
    if mode == "flag":
        assert not got.images.any()  # flagged images are blacked out


@pytest.mark.parametrize("mode", [None, "pass"])
def test_diffusers_loads_what_diffkit_saves(checkpoint, checker_checkpoints, tmp_path, mode):
    _, pipe, _ = checkpoint if mode is None else checker_checkpoints(mode)
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    assert (reloaded.safety_checker is None) == (mode is None)
    expected, got = _run_both(reloaded, pipe, prompt=["a cat", "a dog"], generators=2, negative_prompt=["ugly", ""])
    _assert_close(expected.images, got.images)
    assert got.nsfw_content_detected == expected.nsfw_content_detected
    # and diffkit reads its own save back (text encoder in the Hub's transformers-4 key layout), clip_skip too
    again = _load(tmp_path / "saved")
    call = {"num_inference_steps": 2, "height": 32, "width": 32, "output_type": "np", "clip_skip": 1}
    first = pipe(PROMPT, generator=torch.Generator().manual_seed(1), **call).images
    second = again(PROMPT, generator=torch.Generator().manual_seed(1), **call).images
    _assert_close(first, second)

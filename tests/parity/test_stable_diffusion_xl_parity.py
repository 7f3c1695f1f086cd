"""Stable Diffusion XL parity: diffusers builds and saves tiny random SDXL checkpoints (a base with two CLIP
text encoders and a text_time UNet with two transformer layers in one block, and a refiner with only
text_encoder_2 and requires_aesthetics_score), diffkit loads them and gives diffusers' images for the same
call and generator; diffusers loads what diffkit saves.

Float32 tolerance 1e-5 (max abs, images in [0, 1] or latents). Every call is 32x32 px with 2-3 steps.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sd_checkpoints import SCHEDULER, as_array, tiny_tokenizer, tiny_vae  # noqa: E402

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffkit import DiffusionPipeline, registry  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning")

ATOL = 1e-5
PROMPT = "a photo of a cat"
#: each text encoder's width; the base UNet attends to both (64), the refiner to the second (32)
WIDTH = 32
TIME_DIM = 8
EULER = {k: v for k, v in SCHEDULER.items() if k not in ("clip_sample", "set_alpha_to_one")}
CALL = {"num_inference_steps": 3, "height": 32, "width": 32, "output_type": "np"}


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _text_encoders(tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=WIDTH, intermediate_size=37, num_hidden_layers=3,
        num_attention_heads=4, layer_norm_eps=1e-5, projection_dim=WIDTH, hidden_act="gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _unet(refiner: bool, in_channels: int = 4):
    from diffusers import UNet2DConditionModel

    time_ids = 5 if refiner else 6
    return UNet2DConditionModel(
        sample_size=16, in_channels=in_channels, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4), use_linear_projection=True,
        cross_attention_dim=WIDTH if refiner else 2 * WIDTH, transformer_layers_per_block=(1, 2),
        addition_embed_type="text_time", addition_time_embed_dim=TIME_DIM,
        projection_class_embeddings_input_dim=time_ids * TIME_DIM + WIDTH,
    ).eval()


def build_diffusers_sdxl(folder: Path, kind: str = "base", seed: int = 0, in_channels: int = 4, **settings):
    """Build a tiny diffusers SDXL pipeline (Euler), save it to ``folder``, return it.

    ``kind``: ``"base"`` (StableDiffusionXLPipeline, both encoders), ``"refiner"``
    (StableDiffusionXLImg2ImgPipeline, text_encoder_2 only, aesthetic score) or ``"inpaint"``
    (StableDiffusionXLInpaintPipeline, both encoders, ``in_channels`` 4 or 9).
    """
    torch.manual_seed(seed)
    folder = Path(folder)
    tokenizer = tiny_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    refiner = kind == "refiner"
    components = dict(
        vae=tiny_vae(),
        text_encoder=None if refiner else _text_encoders(tokenizer, projection=False),
        text_encoder_2=_text_encoders(tokenizer, projection=True),
        tokenizer=None if refiner else tokenizer,
        tokenizer_2=tokenizer,
        unet=_unet(refiner, in_channels),
        scheduler=diffusers.EulerDiscreteScheduler(**EULER),
        add_watermarker=False,
        **settings,
    )
    cls = {"base": diffusers.StableDiffusionXLPipeline, "refiner": diffusers.StableDiffusionXLImg2ImgPipeline,
           "inpaint": diffusers.StableDiffusionXLInpaintPipeline}[kind]
    if refiner:
        components["requires_aesthetics_score"] = True
    pipe = cls(**components)
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    return pipe


def _load(folder: Path, cls=DiffusionPipeline, **options):
    pipe = cls.from_pretrained(folder, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "tiny-sdxl"
    reference = build_diffusers_sdxl(folder)
    return reference, _load(folder), folder


@pytest.fixture(scope="module")
def refiner(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / "tiny-refiner"
    reference = build_diffusers_sdxl(folder, "refiner", seed=1)
    return reference, _load(folder), folder


def _generators(seed: int, count: int | None):
    if count is None:
        return torch.Generator().manual_seed(seed)
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _run_both(reference, pipe, seed: int = 0, generators: int | None = None, **call):
    call = {"prompt": PROMPT, **CALL, **call}
    expected = reference(generator=_generators(seed, generators), **call)
    got = pipe(generator=_generators(seed, generators), **call)
    return expected, got


def _assert_close(expected, got, atol=ATOL):
    a, b = as_array(expected), as_array(got)
    assert a.shape == b.shape
    diff = float(np.abs(a - b).max())
    assert diff <= atol, f"max abs diff {diff:.3e} > {atol:.0e}"
    return diff


def _with_scheduler(reference, pipe, name: str | None, **overrides):
    if name is None:
        return reference, pipe
    ref_scheduler = getattr(diffusers, name).from_config(reference.scheduler.config, **overrides)
    kit_scheduler = registry.get("scheduler", name).from_config(dict(ref_scheduler.config))
    settings = {k: reference.config[k] for k in ("requires_aesthetics_score", "force_zeros_for_empty_prompt")
                if k in reference.config}
    ref = type(reference)(**{**reference.components, "scheduler": ref_scheduler}, **settings, add_watermarker=False)
    kit = type(pipe)(**{**pipe.components, "scheduler": kit_scheduler}, **pipe.settings)
    ref.set_progress_bar_config(disable=True)
    kit.set_progress_bar_config(disable=True)
    return ref, kit


BASE_GRID = [
    ("prompt", None, {}, {}),
    ("prompt-2", None, {}, {"prompt_2": "a red dog"}),
    ("negative-prompts", None, {}, {"negative_prompt": "blurry", "negative_prompt_2": "ugly"}),
    ("negative-prompt-2-only-zeroes", None, {}, {"negative_prompt_2": "ugly"}),
    ("batch-per-prompt", None, {}, {"prompt": ["a cat", "a red dog"], "negative_prompt": ["ugly", "low"],
                                    "num_images_per_prompt": 2}),
    ("no-guidance", None, {}, {"guidance_scale": 1.0}),
    ("guidance-rescale", None, {}, {"guidance_scale": 9.0, "guidance_rescale": 0.7}),
    ("micro-conditioning", None, {}, {"original_size": (64, 48), "crops_coords_top_left": (4, 8),
                                      "target_size": (24, 40)}),
    ("negative-micro-conditioning", None, {}, {"negative_original_size": (16, 16),
                                               "negative_crops_coords_top_left": (2, 2),
                                               "negative_target_size": (8, 24)}),
    ("clip-skip", None, {}, {"clip_skip": 1}),
    ("denoising-end", None, {}, {"denoising_end": 0.5, "output_type": "latent"}),
    ("default-size", None, {}, {"height": None, "width": None, "num_inference_steps": 2}),
    ("dpm++2m", "DPMSolverMultistepScheduler", {}, {}),
    ("unipc", "UniPCMultistepScheduler", {}, {}),
    ("euler-ancestral", "EulerAncestralDiscreteScheduler", {}, {"num_images_per_prompt": 2}),
    ("custom-timesteps", "DPMSolverMultistepScheduler", {},
     {"timesteps": [999, 601, 211], "num_inference_steps": None}),
    ("custom-sigmas", None, {}, {"sigmas": [14.6, 4.1, 0.9], "num_inference_steps": None}),
    ("output-pt", None, {}, {"output_type": "pt"}),
]


@pytest.mark.parametrize(("scheduler", "overrides", "call"), [g[1:] for g in BASE_GRID], ids=[g[0] for g in BASE_GRID])
def test_base_images_match_diffusers(base, scheduler, overrides, call):
    reference, pipe, _ = base
    reference, pipe = _with_scheduler(reference, pipe, scheduler, **overrides)
    call = dict(call)
    if call.get("num_inference_steps", 0) is None:
        del call["num_inference_steps"]
    prompts = call.get("prompt")
    generators = len(prompts) * call.get("num_images_per_prompt", 1) if isinstance(prompts, list) else None
    expected, got = _run_both(reference, pipe, generators=generators, **call)
    _assert_close(expected.images, got.images)


def test_the_inputs_reach_the_image(base):
    """Guards the grid: each conditioning input changes the image, so matching diffusers means something."""
    _, pipe, _ = base
    plain = pipe(PROMPT, generator=_generators(0, None), **CALL).images
    for change in ({"prompt_2": "a red dog"}, {"original_size": (64, 48)}, {"crops_coords_top_left": (4, 8)},
                   {"target_size": (24, 40)}, {"clip_skip": 1}, {"negative_prompt": "blurry"}):
        other = pipe(PROMPT, generator=_generators(0, None), **CALL, **change).images
        assert np.abs(other - plain).max() > 1e-4, change


def test_empty_negative_prompt_without_forced_zeros_matches(tmp_path):
    reference = build_diffusers_sdxl(tmp_path / "sdxl", force_zeros_for_empty_prompt=False)
    pipe = _load(tmp_path / "sdxl")
    assert pipe.settings["force_zeros_for_empty_prompt"] is False
    expected, got = _run_both(reference, pipe)
    _assert_close(expected.images, got.images)
    zeros = type(pipe)(**pipe.components, force_zeros_for_empty_prompt=True)
    zeros.set_progress_bar_config(disable=True)
    assert np.abs(zeros(PROMPT, generator=_generators(0, None), **CALL).images - got.images).max() > 1e-4


def test_prompt_embeds_input_matches(base):
    reference, pipe, _ = base
    embeds, negative, pooled, negative_pooled = reference.encode_prompt(
        [PROMPT, "a dog"], device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True,
        negative_prompt=["ugly", "blurry"],
    )
    expected, got = _run_both(
        reference, pipe, prompt=None, prompt_embeds=embeds, negative_prompt_embeds=negative * 0.5,
        pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled.flip(0), generators=2,
    )
    _assert_close(expected.images, got.images)
    mine = pipe.encode_prompt([PROMPT, "a dog"], device="cpu", num_images_per_prompt=1,
                              do_classifier_free_guidance=True, negative_prompt=["ugly", "blurry"])
    for a, b in zip(mine, (embeds, negative, pooled, negative_pooled), strict=True):
        _assert_close(a, b)


def test_callback_on_step_end_matches(base):
    reference, pipe, _ = base

    def make_callback(seen):
        def callback(_pipe, step, timestep, tensors):
            seen.append((step, int(timestep), sorted(tensors)))
            if step == 0:
                tensors["latents"] = tensors["latents"] * 0.5
                tensors["add_text_embeds"] = tensors["add_text_embeds"] * 0.9
                tensors["add_time_ids"] = tensors["add_time_ids"] + 4
            return tensors
        return callback

    seen_ref: list = []
    seen_kit: list = []
    inputs = ["latents", "prompt_embeds", "add_text_embeds", "add_time_ids"]
    expected = reference(PROMPT, generator=_generators(0, None), callback_on_step_end=make_callback(seen_ref),
                         callback_on_step_end_tensor_inputs=inputs, **CALL)
    got = pipe(PROMPT, generator=_generators(0, None), callback_on_step_end=make_callback(seen_kit),
               callback_on_step_end_tensor_inputs=inputs, **CALL)
    assert seen_kit == seen_ref and len(seen_kit) == 3
    _assert_close(expected.images, got.images)


REFINER_GRID = [
    ("strength-0.4", {"strength": 0.4, "num_inference_steps": 5}),
    ("strength-0.6-dpm", {"strength": 0.6, "scheduler": "DPMSolverMultistepScheduler"}),
    ("strength-1", {"strength": 1.0, "scheduler": "UniPCMultistepScheduler"}),
    ("aesthetic-scores", {"strength": 0.7, "aesthetic_score": 8.0, "negative_aesthetic_score": 1.0,
                          "negative_crops_coords_top_left": (4, 4)}),
    ("batch", {"strength": 0.7, "prompt": ["a cat", "a dog"], "num_images_per_prompt": 2, "generators": 4}),
    ("no-guidance", {"strength": 0.7, "guidance_scale": 1.0}),
    # a second-order scheduler starts the refiner's share on an odd step count
    ("denoising-start-heun", {"denoising_start": 0.6, "num_inference_steps": 4, "scheduler": "HeunDiscreteScheduler"}),
]


def _image(seed: int = 3, size: int = 32):
    import PIL.Image

    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.mark.parametrize("call", [g[1] for g in REFINER_GRID], ids=[g[0] for g in REFINER_GRID])
def test_refiner_img2img_matches(refiner, call):
    reference, pipe, _ = refiner
    assert type(pipe).__name__ == "StableDiffusionXLImg2ImgPipeline" and pipe.text_encoder is None
    assert pipe.settings["requires_aesthetics_score"] is True
    call = dict(call)
    reference, pipe = _with_scheduler(reference, pipe, call.pop("scheduler", None))
    generators = call.pop("generators", None)
    call = {"image": _image(), "num_inference_steps": 3, "output_type": "np", **call}
    expected = reference(**{"prompt": PROMPT, **call}, generator=_generators(0, generators))
    got = pipe(**{"prompt": PROMPT, **call}, generator=_generators(0, generators))
    _assert_close(expected.images, got.images)


def test_img2img_on_the_base_checkpoint_matches(base):
    """The base checkpoint as img2img (both encoders, size micro-conditioning, no aesthetic score)."""
    reference, pipe, folder = base
    reference = diffusers.StableDiffusionXLImg2ImgPipeline(**reference.components, add_watermarker=False)
    reference.set_progress_bar_config(disable=True)
    pipe = _load(folder, registry.get("pipeline", "StableDiffusionXLImg2ImgPipeline"))
    call = {"image": [_image(3), _image(4)], "strength": 0.6, "num_inference_steps": 3, "output_type": "np",
            "prompt": ["a cat", "a dog"], "guidance_rescale": 0.5, "negative_original_size": (16, 16)}
    expected = reference(**call, generator=_generators(0, 2))
    got = pipe(**call, generator=_generators(0, 2))
    _assert_close(expected.images, got.images)


def test_base_to_refiner_ensemble_matches(base, refiner):
    """The ensemble of experts: the base stops at denoising_end=0.8 and hands its latents to the refiner."""
    base_ref, base_kit, _ = base
    refiner_ref, refiner_kit, _ = refiner
    call = {"prompt": PROMPT, "num_inference_steps": 5, "height": 32, "width": 32}
    expected_latents = base_ref(**call, denoising_end=0.8, output_type="latent", generator=_generators(0, None)).images
    got_latents = base_kit(**call, denoising_end=0.8, output_type="latent", generator=_generators(0, None)).images
    # latents are not in [0, 1]: at 80% of the schedule they still carry noise of sigma ~1, so the tolerance
    # is relative to their scale (float32 rounding in Euler's steps, ~1e-6 relative)
    _assert_close(expected_latents, got_latents, atol=ATOL * float(expected_latents.abs().max()))
    assert base_kit.num_timesteps == base_ref.num_timesteps == 4
    del call["height"], call["width"]
    # both refiners finish the same latents, so the images compare at the absolute tolerance
    expected = refiner_ref(**call, image=expected_latents, denoising_start=0.8, output_type="np",
                           generator=_generators(1, None)).images
    got = refiner_kit(**call, image=expected_latents, denoising_start=0.8, output_type="np",
                      generator=_generators(1, None)).images
    _assert_close(expected, got)
    assert refiner_kit.num_timesteps == refiner_ref.num_timesteps
    steps = []
    refiner_kit(**call, image=got_latents, denoising_start=0.8, output_type="latent", generator=_generators(1, None),
                callback_on_step_end=lambda _p, i, t, k: steps.append(int(t)) or k)
    assert 0 < len(steps) < 5  # only the low-noise end of the 5-step plan runs


@pytest.fixture(scope="module", params=[9, 4], ids=["inpaint-unet", "plain-unet"])
def inpainter(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl") / f"tiny-inpaint-{request.param}"
    reference = build_diffusers_sdxl(folder, "inpaint", seed=2, in_channels=request.param)
    return reference, _load(folder), folder


def _mask(size: int = 32):
    import PIL.Image

    mask = np.zeros((size, size), dtype=np.uint8)
    mask[8:24, 4:20] = 255
    return PIL.Image.fromarray(mask)


INPAINT_GRID = [
    ("strength-default", {}),
    ("strength-0.6", {"strength": 0.6}),
    ("strength-1-batch", {"strength": 1.0, "prompt": ["a cat", "a dog"], "generators": 2}),
    ("no-guidance", {"strength": 0.8, "guidance_scale": 1.0}),
    ("dpm", {"strength": 0.7, "scheduler": "DPMSolverMultistepScheduler"}),
    ("numpy-image-tensor-mask", {"strength": 0.8, "as_arrays": True}),
    ("padding-mask-crop", {"strength": 0.8, "padding_mask_crop": 2, "output_type": "pil", "image_size": 48}),
]


@pytest.mark.parametrize("call", [g[1] for g in INPAINT_GRID], ids=[g[0] for g in INPAINT_GRID])
def test_inpaint_matches(inpainter, call):
    reference, pipe, _ = inpainter
    assert type(pipe).__name__ == "StableDiffusionXLInpaintPipeline"
    call = dict(call)
    reference, pipe = _with_scheduler(reference, pipe, call.pop("scheduler", None))
    generators = call.pop("generators", None)
    size = call.pop("image_size", 32)
    image, mask = _image(size=size), _mask(size)
    if call.pop("as_arrays", False):  # NHWC floats in [0, 1] and a NCHW tensor
        image = np.asarray(image, dtype=np.float32)[None] / 255.0
        mask = torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)[None, None]
    call = {"prompt": PROMPT, "image": image, "mask_image": mask, **CALL, **call}
    expected = reference(**call, generator=_generators(0, generators))
    got = pipe(**call, generator=_generators(0, generators))
    # PIL images are uint8: allow one rounding step where float32 noise sits on a boundary
    _assert_close(expected.images, got.images, atol=1.0 if call["output_type"] == "pil" else ATOL)


@pytest.mark.parametrize("inpainter", [4], indirect=True, ids=["plain-unet"])
def test_inpaint_keeps_the_unmasked_region_on_a_plain_unet(inpainter):
    _, pipe, _ = inpainter
    out = pipe(PROMPT, image=_image(), mask_image=_mask(), generator=_generators(0, None),
               **{**CALL, "output_type": "latent"}).images
    known = pipe.image_latents(pipe.preprocess_image(_image(), 32, 32), 1, torch.float32, torch.device("cpu"),
                               _generators(0, None), statistics=False, repeat_before_encoding=False)
    # the latent-space mask (nearest-downsampled) is 0 outside rows 4..11, columns 2..9
    outside = torch.ones(16, 16, dtype=torch.bool)
    outside[4:12, 2:10] = False
    assert torch.allclose(out[0][:, outside], known[0][:, outside], atol=1e-5)


@pytest.mark.parametrize("kind", ["base", "refiner", "inpaint"])
def test_diffusers_loads_what_diffkit_saves(request, tmp_path, kind):
    if kind == "inpaint":
        build_diffusers_sdxl(tmp_path / "sdxl", kind, in_channels=9)
        pipe = _load(tmp_path / "sdxl")
    else:
        pipe = request.getfixturevalue(kind)[1]
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = getattr(diffusers, type(pipe).__name__).from_pretrained(tmp_path / "saved", add_watermarker=False)
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.config.force_zeros_for_empty_prompt is True
    call = {"prompt": ["a cat", "a dog"], "negative_prompt": ["ugly", ""], "num_inference_steps": 2,
            "output_type": "np"}
    if kind != "base":
        call.update(image=_image(), strength=0.7)
    if kind == "inpaint":
        call["mask_image"] = _mask()
    if kind == "refiner":
        assert reloaded.text_encoder is None and reloaded.config.requires_aesthetics_score is True
    expected = reloaded(**call, generator=_generators(0, 2))
    got = pipe(**call, generator=_generators(0, 2))
    _assert_close(expected.images, got.images)


def test_float16_on_cpu_matches_loosely(base):
    """Both load the checkpoint in float16; the VAE decodes in float32 (force_upcast) on both sides."""
    _, _, folder = base
    reference = diffusers.StableDiffusionXLPipeline.from_pretrained(folder, torch_dtype=torch.float16,
                                                                    add_watermarker=False)
    reference.set_progress_bar_config(disable=True)
    try:
        expected = reference(PROMPT, generator=_generators(0, None), **CALL).images
    except RuntimeError as exc:  # older CPU kernels lack some float16 ops
        pytest.skip(f"this torch build cannot run the model in float16 on the CPU: {exc}")
    pipe = _load(folder, torch_dtype=torch.float16)
    assert pipe.unet.dtype == torch.float16 and pipe.vae.dtype == torch.float16
    got = pipe(PROMPT, generator=_generators(0, None), **CALL).images
    assert pipe.vae.dtype == torch.float16
    _assert_close(expected, got, atol=1e-2)


def test_vae_latent_statistics_match(base, tmp_path):
    """A VAE with latents_mean/latents_std: img2img standardises the encoded latents, decoding undoes it."""
    reference, pipe, _ = base
    config = {k: v for k, v in reference.vae.config.items() if not k.startswith("_")}  # no _use_default_values
    vae = diffusers.AutoencoderKL.from_config(
        {**config, "latents_mean": [0.1, -0.2, 0.3, 0.0], "latents_std": [0.9, 1.1, 1.3, 0.7]}
    )
    assert vae.config.latents_mean is not None
    vae.load_state_dict(reference.vae.state_dict())
    vae.save_pretrained(tmp_path / "vae")
    kit_vae = registry.get("model", "AutoencoderKL").from_pretrained(tmp_path / "vae")
    assert kit_vae.config.latents_std == (0.9, 1.1, 1.3, 0.7)
    ref = diffusers.StableDiffusionXLImg2ImgPipeline(**{**reference.components, "vae": vae.eval()},
                                                     add_watermarker=False)
    kit = registry.get("pipeline", "StableDiffusionXLImg2ImgPipeline")(**{**pipe.components, "vae": kit_vae},
                                                                      add_watermarker=False)
    ref.set_progress_bar_config(disable=True)
    kit.set_progress_bar_config(disable=True)
    call = {"prompt": PROMPT, "image": _image(), "strength": 0.6, "num_inference_steps": 3, "output_type": "np"}
    expected = ref(**call, generator=_generators(0, None)).images
    got = kit(**call, generator=_generators(0, None)).images
    _assert_close(expected, got)
    plain = type(kit)(**pipe.components, add_watermarker=False)
    plain.set_progress_bar_config(disable=True)
    assert np.abs(plain(**call, generator=_generators(0, None)).images - got).max() > 1e-4

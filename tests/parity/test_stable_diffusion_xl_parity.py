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
    ref = type(reference)(**{**reference.components, "scheduler": ref_scheduler}, add_watermarker=False)
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
    ("custom-timesteps", "DPMSolverMultistepScheduler", {}, {"timesteps": [999, 601, 211], "num_inference_steps": None}),
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

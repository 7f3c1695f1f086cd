"""Parity of the Stable Diffusion depth-to-image, image-variation, x4-upscale and latent-upscale pipelines.

diffusers builds each tiny random pipeline (a few-channel UNet, a two-block VAE, a test-built CLIP
tokenizer, a tiny plain DPT depth estimator, a tiny CLIP vision tower) and saves it; diffkit loads
the folder and must give diffusers' images for the same call and generator (float32, max abs diff
<= 1e-5); diffusers must load what diffkit saves. Every call is 16-32 px with 2-3 steps.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from sd_checkpoints import (  # noqa: E402
    HIDDEN,
    SCHEDULER,
    as_array,
    tiny_safety_checker,
    tiny_text_encoder,
    tiny_tokenizer,
    tiny_unet,
    tiny_vae,
)

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

from diffkit import DiffusionPipeline  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
    # diffusers' depth2img enters CPU autocast in float32, which torch turns off with this warning
    pytest.mark.filterwarnings("ignore:In CPU autocast, but the target dtype is not supported:UserWarning"),
]

ATOL = 1e-5
PROMPT = "a photo of a cat"


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# -- checkpoints diffusers builds --------------------------------------------------------------
def tiny_depth_estimator(hybrid: bool = False):
    """A DPT with a 4-layer, 32-wide ViT and its processor at 32x32: plain (8 px patches), or hybrid as
    stable-diffusion-2-depth's DPT-Hybrid (a three-stage BiT backbone with group norms under 16 px patches)."""
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    vit = dict(image_size=32, num_channels=3, hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
               intermediate_size=37, backbone_out_indices=(0, 1, 2, 3), fusion_hidden_size=16)
    if hybrid:
        backbone = {"model_type": "bit", "global_padding": "same", "layer_type": "bottleneck", "depths": [1, 1, 1],
                    "embedding_dynamic_padding": True, "hidden_sizes": [16, 32, 64], "num_groups": 2,
                    "out_features": ["stage1", "stage2", "stage3"]}
        config = DPTConfig(**vit, patch_size=16, is_hybrid=True, backbone_config=backbone,
                           backbone_featmap_shape=[1, 64, 2, 2], neck_hidden_sizes=[16, 32, 32, 32])
    else:
        config = DPTConfig(**vit, patch_size=8, is_hybrid=False, neck_hidden_sizes=[8, 16, 32, 32], head_in_index=-1)
    return DPTForDepthEstimation(config).eval(), DPTImageProcessor(size={"height": 32, "width": 32})


def tiny_image_encoder():
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, projection_dim=HIDDEN, intermediate_size=37, num_hidden_layers=2,
                              num_attention_heads=4, image_size=32, patch_size=8)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return CLIPVisionModelWithProjection(config).eval(), processor


def _text_parts(folder: Path):
    tokenizer = tiny_tokenizer(folder.parent / f"{folder.name}-tokenizer")
    return tokenizer, tiny_text_encoder(tokenizer)


def _save(pipe, folder: Path):
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    return pipe


def build_depth2img(folder: Path, hybrid: bool = False):
    torch.manual_seed(0)
    tokenizer, text_encoder = _text_parts(folder)
    estimator, processor = tiny_depth_estimator(hybrid)
    return _save(diffusers.StableDiffusionDepth2ImgPipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=tiny_unet(in_channels=5),
        scheduler=diffusers.DDIMScheduler(**SCHEDULER), depth_estimator=estimator, feature_extractor=processor,
    ), folder)


def build_variation(folder: Path, safety_checker: str | None = None):
    """``safety_checker="flag"``: with a checker that flags every image (its processor then serves both)."""
    torch.manual_seed(0)
    encoder, processor = tiny_image_encoder()
    checker = None
    if safety_checker is not None:
        checker, processor = tiny_safety_checker(safety_checker == "flag")
    return _save(diffusers.StableDiffusionImageVariationPipeline(
        vae=tiny_vae(), image_encoder=encoder, unet=tiny_unet(), scheduler=diffusers.DDIMScheduler(**SCHEDULER),
        safety_checker=checker, feature_extractor=processor, requires_safety_checker=checker is not None,
    ), folder)


def build_upscale(folder: Path):
    """The x4 layout at toy size: a 7-channel UNet with 1000 noise-level classes, v-prediction DDIM."""
    torch.manual_seed(0)
    tokenizer, text_encoder = _text_parts(folder)
    return _save(diffusers.StableDiffusionUpscalePipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=tiny_unet(in_channels=7, num_class_embeds=1000),
        low_res_scheduler=diffusers.DDPMScheduler(),
        scheduler=diffusers.DDIMScheduler(**SCHEDULER, prediction_type="v_prediction"), max_noise_level=350,
    ), folder)


def build_latent_upscale(folder: Path):
    """sd-x2-latent-upscaler's UNet layout at toy size: K-diffusion blocks, no mid block, 8 input channels,
    5 output channels (the last one a variance), Fourier time embedding and a ``timestep_cond`` of 128
    noise-level values plus the pooled text."""
    torch.manual_seed(0)
    tokenizer, text_encoder = _text_parts(folder)
    unet = diffusers.UNet2DConditionModel(
        sample_size=16, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
        down_block_types=("KDownBlock2D",) + ("KCrossAttnDownBlock2D",) * 3,
        up_block_types=("KCrossAttnUpBlock2D",) * 3 + ("KUpBlock2D",), mid_block_type=None, norm_num_groups=None,
        attention_head_dim=8, cross_attention_dim=HIDDEN, act_fn="gelu", time_embedding_type="fourier",
        timestep_post_act="gelu", time_cond_proj_dim=128 + HIDDEN, conv_in_kernel=1, conv_out_kernel=1,
        in_channels=8, out_channels=5, resnet_time_scale_shift="scale_shift",
    ).eval()
    scheduler = diffusers.EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                                 prediction_type="sample", steps_offset=1)
    return _save(diffusers.StableDiffusionLatentUpscalePipeline(
        vae=tiny_vae(), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
    ), folder)


BUILDERS = {"depth": build_depth2img, "depth-hybrid": lambda folder: build_depth2img(folder, hybrid=True),
            "variation": build_variation, "variation-flagged": lambda folder: build_variation(folder, "flag"),
            "upscale": build_upscale, "latent-upscale": build_latent_upscale}


def _load(folder: Path):
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    built = {}
    for name, build in BUILDERS.items():
        folder = tmp_path_factory.mktemp(name) / "tiny"
        reference = build(folder)
        built[name] = (reference, _load(folder), folder)
    return built


# -- inputs --------------------------------------------------------------------------------------
def _pil(size: int, seed: int = 0):
    import PIL.Image

    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def _generator(seed: int = 0, count: int | None = None):
    if count is None:
        return torch.Generator().manual_seed(seed)
    return [torch.Generator().manual_seed(seed + i) for i in range(count)]


def _run_both(reference, pipe, generators: int | None = None, **call):
    expected = reference(generator=_generator(0, generators), **copy.deepcopy(call))
    got = pipe(generator=_generator(0, generators), **copy.deepcopy(call))
    return expected, got


def _assert_close(expected, got, atol=ATOL):
    a, b = as_array(expected), as_array(got)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = float(np.abs(a - b).max())
    assert diff <= atol, f"max abs diff {diff:.3e} > {atol:.0e}"
    return diff


_DEPTH = torch.linspace(0.5, 3.0, 24 * 24).reshape(1, 24, 24)

GRID = {
    "depth": [
        ("given-depth-map", {"prompt": PROMPT, "image": _pil(32), "depth_map": _DEPTH, "strength": 0.7}),
        ("estimated-depth", {"prompt": PROMPT, "image": _pil(32), "strength": 1.0}),
        ("batch-no-guidance", {"prompt": [PROMPT, "a dog"], "image": [_pil(32, 1), _pil(32, 2)],
                               "num_images_per_prompt": 2, "guidance_scale": 1.0, "strength": 0.8}),
        ("negative-eta", {"prompt": PROMPT, "negative_prompt": "blurry", "image": _pil(32), "eta": 0.5,
                          "strength": 0.9}),
        ("latent-output", {"prompt": PROMPT, "image": _pil(32), "output_type": "latent", "strength": 0.5}),
        ("callback-edits-depth", {"prompt": PROMPT, "image": _pil(32), "depth_map": _DEPTH, "strength": 1.0,
                                  "callback_on_step_end": lambda pipe, i, t, tensors: {
                                      "latents": tensors["latents"] * 0.9, "depth_mask": -tensors["depth_mask"]},
                                  "callback_on_step_end_tensor_inputs": ["latents", "depth_mask"]}),
    ],
    "depth-hybrid": [
        ("estimated-depth", {"prompt": PROMPT, "image": _pil(32), "strength": 1.0}),
        ("estimated-depth-41px-batch", {"prompt": [PROMPT, "a dog"], "image": [_pil(41, 1), _pil(41, 2)],
                                        "strength": 0.7}),
    ],
    "variation": [
        ("guided", {"image": _pil(32)}),
        ("no-guidance", {"image": _pil(32), "guidance_scale": 1.0}),
        ("batch", {"image": [_pil(32, 1), _pil(32, 2)], "num_images_per_prompt": 2}),
        ("pixel-values-tensor", {"image": torch.rand(1, 3, 32, 32) * 2 - 1, "height": 16, "width": 16}),
    ],
    "variation-flagged": [
        ("flagged-blacked-out", {"image": [_pil(32, 1), _pil(32, 2)]}),
    ],
    "upscale": [
        ("noise-20", {"prompt": PROMPT, "image": _pil(16), "noise_level": 20}),
        ("noise-250", {"prompt": PROMPT, "image": _pil(16), "noise_level": 250}),
        ("batch-per-prompt", {"prompt": [PROMPT, "a dog"], "image": [_pil(16, 1), _pil(16, 2)],
                              "num_images_per_prompt": 2, "noise_level": 100}),
        ("no-guidance-tensor", {"prompt": PROMPT, "image": torch.rand(1, 3, 16, 16), "guidance_scale": 1.0}),
    ],
    "latent-upscale": [
        ("latents", {"prompt": PROMPT, "image": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))}),
        ("pixels", {"prompt": PROMPT, "image": _pil(16), "negative_prompt": "blurry"}),
        ("guidance-zero", {"prompt": PROMPT, "image": _pil(16), "guidance_scale": 0.0}),
        ("batch-no-guidance", {"prompt": [PROMPT, "a dog"], "image": [_pil(16, 1), _pil(16, 2)],
                               "guidance_scale": 1.0}),
    ],
}

CASES = [(task, case_id, call) for task, cases in GRID.items() for case_id, call in cases]


@pytest.mark.parametrize(("task", "case_id", "call"), CASES, ids=[f"{t}-{c}" for t, c, _ in CASES])
def test_images_match_diffusers(checkpoints, task, case_id, call):
    reference, pipe, _ = checkpoints[task]
    call = {"num_inference_steps": 3, "output_type": "np", **call}
    generators = None
    if case_id.startswith("batch") and task == "depth":
        generators = 4  # one per image, as diffusers draws them
    expected, got = _run_both(reference, pipe, generators=generators, **call)
    _assert_close(expected.images, got.images)
    if "nsfw_content_detected" in expected:
        assert got.nsfw_content_detected == expected.nsfw_content_detected
        if task == "variation-flagged":
            assert got.nsfw_content_detected == [True, True] and not got.images.any()


def test_loaded_classes(checkpoints):
    names = {task: type(pipe).__name__ for task, (_, pipe, _) in checkpoints.items()}
    assert names == {
        "depth": "StableDiffusionDepth2ImgPipeline", "depth-hybrid": "StableDiffusionDepth2ImgPipeline",
        "variation": "StableDiffusionImageVariationPipeline",
        "variation-flagged": "StableDiffusionImageVariationPipeline",
        "upscale": "StableDiffusionUpscalePipeline", "latent-upscale": "StableDiffusionLatentUpscalePipeline",
    }
    assert type(checkpoints["depth"][1].depth_estimator).__name__ == "DPTForDepthEstimation"
    assert checkpoints["depth-hybrid"][1].depth_estimator.config.is_hybrid
    assert type(checkpoints["variation"][1].image_encoder).__name__ == "CLIPVisionModelWithProjection"
    assert checkpoints["upscale"][1].settings["max_noise_level"] == 350


SAVE_CALLS = {
    "depth": {"prompt": PROMPT, "image": _pil(32), "strength": 0.7},
    "depth-hybrid": {"prompt": PROMPT, "image": _pil(32), "strength": 0.7},
    "variation": {"image": _pil(32)},
    "variation-flagged": {"image": _pil(32)},
    "upscale": {"prompt": PROMPT, "image": _pil(16), "noise_level": 30},
    "latent-upscale": {"prompt": PROMPT, "image": _pil(16)},
}


@pytest.mark.parametrize("task", list(BUILDERS))
def test_diffusers_loads_what_diffkit_saves(checkpoints, task, tmp_path):
    reference, pipe, _ = checkpoints[task]
    pipe.save_pretrained(tmp_path / "saved")
    reloaded = getattr(diffusers, type(reference).__name__).from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 2, "output_type": "np", **SAVE_CALLS[task]}
    expected, got = _run_both(reference, reloaded, **call)
    assert np.array_equal(as_array(expected.images), as_array(got.images))


def test_upscale_float16_decodes_in_float32_as_diffusers(checkpoints):
    """A float16 x4 pipeline: the VAE (force_upcast) decodes in float32 on both sides; the shared VAE stays float16.

    Tolerance 1e-2: the two libraries round float16 intermediates at different places on the CPU."""
    folder = checkpoints["upscale"][2]
    reference = diffusers.StableDiffusionUpscalePipeline.from_pretrained(folder, torch_dtype=torch.float16)
    reference.set_progress_bar_config(disable=True)
    pipe = DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float16)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.vae.config.force_upcast
    call = {"prompt": PROMPT, "image": _pil(16), "noise_level": 20, "num_inference_steps": 2, "output_type": "np"}
    expected, got = _run_both(reference, pipe, **call)
    assert np.isfinite(got.images).all()
    _assert_close(expected.images, got.images, atol=1e-2)
    assert pipe.vae.dtype == torch.float16


def test_depth_checkpoint_naming_dpt_feature_extractor_loads(checkpoints, tmp_path):
    """stable-diffusion-2-depth's model_index.json names ``DPTFeatureExtractor`` (gone in transformers 5)."""
    import json
    import shutil

    reference, _, folder = checkpoints["depth"]
    copy_folder = tmp_path / "depth"
    shutil.copytree(folder, copy_folder)
    index = json.loads((copy_folder / "model_index.json").read_text())
    index["feature_extractor"] = ["transformers", "DPTFeatureExtractor"]
    (copy_folder / "model_index.json").write_text(json.dumps(index))
    pipe = _load(copy_folder)
    assert type(pipe.feature_extractor).__name__.startswith("DPTImageProcessor")
    call = {"prompt": PROMPT, "image": _pil(32), "strength": 1.0, "num_inference_steps": 2, "output_type": "np"}
    expected, got = _run_both(reference, pipe, **call)
    _assert_close(expected.images, got.images)


OUTDATED_CALLS = {
    "depth": {"prompt": PROMPT, "image": _pil(32), "depth_map": _DEPTH, "strength": 1.0},
    "variation": {"image": _pil(32)},
    "upscale": {"prompt": PROMPT, "image": _pil(16), "noise_level": 20},
}


@pytest.mark.parametrize("task", list(OUTDATED_CALLS))
def test_outdated_scheduler_config_is_used_as_given(checkpoints, task):
    """Unlike text-to-image, diffusers' depth2img, variation and x4 pipelines do not rewrite steps_offset=0 or
    clip_sample=True: the schedule is run as configured, so diffkit does the same."""
    from diffkit import registry

    reference, pipe, _ = checkpoints[task]
    prediction = reference.scheduler.config.prediction_type
    outdated = diffusers.DDIMScheduler(**{**SCHEDULER, "steps_offset": 0, "clip_sample": True},
                                       prediction_type=prediction)
    ours = registry.get("scheduler", "DDIMScheduler").from_config(dict(outdated.config))
    settings = {k: v for k, v in reference.config.items() if k in ("requires_safety_checker", "max_noise_level")}
    reference = type(reference)(**{**reference.components, "scheduler": outdated}, **settings)
    reference.set_progress_bar_config(disable=True)
    pipe = type(pipe)(**{**pipe.components, "scheduler": ours}, **pipe.settings)
    pipe.set_progress_bar_config(disable=True)
    assert pipe.scheduler.config.steps_offset == 0 and pipe.scheduler.config.clip_sample
    call = {"num_inference_steps": 3, "output_type": "np", **OUTDATED_CALLS[task]}
    expected, got = _run_both(reference, pipe, **call)
    _assert_close(expected.images, got.images)

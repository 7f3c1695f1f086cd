"""StableDiffusionPipeline without diffusers: registration, the family base's steps, and bad input.

Each bad input gives one clear error naming the argument (parity with diffusers is in
``tests/parity/test_stable_diffusion_parity.py``).
"""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffkit import registry
from diffkit_pipeline_stable_diffusion import hooks

CALL = dict(num_inference_steps=2, height=32, width=32, output_type="np")


def _seed(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- registration ------------------------------------------------------------------------
def test_hook_registers_the_pipeline(diffkit_registry):
    from diffkit.testing import plugin

    with plugin(hooks, dist="diffkit-pipeline-stable-diffusion"):
        cls = registry.get("pipeline", "StableDiffusionPipeline")
    assert cls.__name__ == "StableDiffusionPipeline"
    assert cls.component_names() == [
        "feature_extractor", "image_encoder", "safety_checker", "scheduler", "text_encoder", "tokenizer", "unet", "vae",
    ]
    assert cls.parameter_names() == ["requires_safety_checker"]
    assert cls.model_cpu_offload_seq == "text_encoder->unet->vae"


def test_importing_the_hooks_and_package_imports_no_torch():
    code = ("import sys, diffkit_pipeline_stable_diffusion, diffkit_pipeline_stable_diffusion.hooks; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# -- the shared steps --------------------------------------------------------------------
def test_encode_prompt_repeats_each_prompt_adjacently(pipe):
    positive, negative = pipe.encode_prompt(["a cat", "a dog"], "cpu", 3, True, negative_prompt="blurry")
    assert positive.shape == negative.shape == (6, 77, 32)
    assert torch.equal(positive[0], positive[2]) and not torch.equal(positive[2], positive[3])
    assert torch.equal(negative[0], negative[5])  # one string negative prompt for every prompt
    only, none = pipe.encode_prompt("a cat", "cpu", 1, False)
    assert none is None and torch.equal(only[0], positive[0])


def test_a_long_prompt_is_cut_with_a_warning_naming_the_cut_words(pipe, caplog):
    prompt = " ".join(["cat"] * 80) + " astronaut riding horse"
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline.stable_diffusion"):
        pipe.encode_prompt(prompt, "cpu", 1, False)
    message = caplog.text
    assert "77 tokens" in message and "astronaut riding horse" in message


def test_guidance_scale_at_most_one_runs_the_unet_on_the_plain_batch(pipe, monkeypatch):
    batches: list[int] = []
    forward = type(pipe.unet).forward

    def spy(self, sample, *args, **kwargs):
        batches.append(sample.shape[0])
        return forward(self, sample, *args, **kwargs)

    monkeypatch.setattr(type(pipe.unet), "forward", spy)
    pipe("a cat", guidance_scale=1.0, generator=_seed(), **CALL)
    pipe("a cat", guidance_scale=5.0, generator=_seed(), **CALL)
    assert batches == [1, 1, 2, 2]  # guidance: one call per step on [negative; positive]


def test_a_call_leaves_nothing_on_the_pipeline(pipe):
    before = dict(vars(pipe))
    pipe("a cat", guidance_scale=7.0, guidance_rescale=0.5, clip_skip=1, generator=_seed(), **CALL)
    assert vars(pipe).keys() == before.keys()
    assert all(vars(pipe)[k] is v for k, v in before.items() if not isinstance(v, dict))


def test_given_latents_are_used(pipe):
    latents = torch.randn(1, 4, 16, 16, generator=_seed(3))
    first = pipe("a cat", latents=latents, **CALL).images
    again = pipe("a cat", latents=latents.clone(), generator=_seed(9), **CALL).images
    assert np.array_equal(first, again)


def test_legacy_scheduler_settings_are_replaced_with_a_warning(components, caplog):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    legacy = type(components["scheduler"]).from_config(components["scheduler"].config, steps_offset=0, clip_sample=True)
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline.stable_diffusion"):
        pipe = StableDiffusionPipeline(**{**components, "scheduler": legacy})
    assert pipe.scheduler.config.steps_offset == 1 and pipe.scheduler.config.clip_sample is False
    assert "steps_offset" in caplog.text and "clip_sample" in caplog.text


def test_default_size_follows_the_unet_and_old_configs_as_diffusers_reads_them(components, unet_config, caplog):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components)
    assert pipe.default_size() == (32, 32)  # sample_size 16 x VAE factor 2
    unet_class = type(components["unet"])
    old = unet_class.from_config({**unet_config, "_diffusers_version": "0.8.1"})
    with caplog.at_level(logging.WARNING, logger="diffkit.pipeline.stable_diffusion"):
        assert StableDiffusionPipeline(**{**components, "unet": old}).default_size() == (128, 128)
    assert "sample_size=16" in caplog.text
    wide = unet_class.from_config({**unet_config, "sample_size": (16, 24)})
    assert StableDiffusionPipeline(**{**components, "unet": wide}).default_size() == (32, 48)


def test_model_offload_gives_the_same_images(components):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    plain = pipe("a cat", generator=_seed(), **CALL).images
    pipe.enable_offload("model", device="cpu")
    try:
        offloaded = pipe("a cat", generator=_seed(), **CALL).images
    finally:
        pipe.disable_offload()
    assert np.array_equal(plain, offloaded)


def test_vae_toggles_reach_the_vae(pipe):
    pipe.enable_vae_slicing()
    pipe.enable_vae_tiling()
    try:
        sliced = pipe(["a cat", "a dog"], generator=[_seed(0), _seed(1)], **CALL).images
    finally:
        pipe.disable_vae_slicing()
        pipe.disable_vae_tiling()
    plain = pipe(["a cat", "a dog"], generator=[_seed(0), _seed(1)], **CALL).images
    assert np.abs(sliced - plain).max() <= 1e-5


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"prompt": "a cat", "prompt_embeds": torch.zeros(1, 77, 32)}, ["prompt", "prompt_embeds", "both"]),
        ({}, ["prompt", "prompt_embeds", "neither"]),
        ({"prompt": ["a cat", "a dog"], "negative_prompt": ["ugly"]}, ["negative_prompt", "1", "2 prompts"]),
        ({"prompt": "a cat", "height": 33}, ["height", "width", "multiples", "2"]),
        ({"prompt": "a cat", "width": 31}, ["height", "width", "multiples", "2"]),
        ({"prompt": "a cat", "num_images_per_prompt": 0}, ["num_images_per_prompt", ">= 1"]),
        ({"prompt": ["a cat", "a dog"], "num_images_per_prompt": 2, "generator": [_seed(0)] * 3},
         ["generator", "3", "4 images"]),
        ({"prompt": "a cat", "output_type": "jpeg"}, ["output_type", "'jpeg'"]),
        ({"prompt": "a cat", "timesteps": [999, 500], "sigmas": [1.0, 0.5]}, ["timesteps", "sigmas"]),
        ({"prompt": "a cat", "latents": torch.zeros(1, 4, 8, 8)}, ["latents", "(1, 4, 16, 16)"]),
        ({"prompt": 3}, ["prompt", "int"]),
        ({"prompt": "a cat", "callback_on_step_end_tensor_inputs": ["noise"]},
         ["callback_on_step_end_tensor_inputs", "noise"]),
    ],
    ids=["prompt-and-embeds", "neither", "negative-count", "height", "width", "images-per-prompt",
         "generator-count", "output-type", "timesteps-and-sigmas", "latents-shape", "prompt-type",
         "callback-inputs"],
)
def test_bad_call_arguments_name_the_argument(pipe, arguments, words):
    with pytest.raises(ValueError) as info:
        pipe(**{**CALL, **arguments})
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_scheduler_without_custom_schedules_says_so(components):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    pndm = registry.get("scheduler", "PNDMScheduler").from_config(components["scheduler"].config, skip_prk_steps=True)
    pipe = StableDiffusionPipeline(**{**components, "scheduler": pndm})
    with pytest.raises(ValueError, match="PNDMScheduler does not take a custom sigmas schedule"):
        pipe("a cat", sigmas=[14.0, 1.0], **{k: v for k, v in CALL.items() if k != "num_inference_steps"})


def test_a_text_encoder_of_another_width_names_both_components_and_numbers(components, make_text_encoder):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    wide = make_text_encoder(components["tokenizer"], hidden_size=48)
    with pytest.raises(ValueError) as info:
        StableDiffusionPipeline(**{**components, "text_encoder": wide})
    message = str(info.value)
    for word in ("text_encoder", "hidden_size=48", "unet", "cross_attention_dim=32"):
        assert word in message, message


def test_a_safety_checker_without_feature_extractor_is_refused(components):
    from diffkit_pipeline_stable_diffusion.text_to_image import StableDiffusionPipeline

    with pytest.raises(ValueError, match="feature_extractor"):
        StableDiffusionPipeline(**{**components, "safety_checker": torch.nn.Identity()})


def test_a_tokenizer_folder_without_its_vocabulary_names_the_folder(pipe, tmp_path):
    from diffkit import DiffusionPipeline

    pipe.save_pretrained(tmp_path / "sd")
    for name in ("tokenizer.json", "vocab.json"):  # transformers 5 saves the first, Hub checkpoints hold the second
        (tmp_path / "sd" / "tokenizer" / name).unlink(missing_ok=True)
    with pytest.raises(Exception) as info:
        DiffusionPipeline.from_pretrained(tmp_path / "sd")
    message = str(info.value)
    assert "tokenizer" in message and "vocab.json" in message, message

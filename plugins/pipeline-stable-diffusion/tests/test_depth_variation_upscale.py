"""Depth-to-image, image variation, x4 and latent upscalers built from diffkit's own classes: shapes, behaviour
and one clear error per bad input (numbers against diffusers: tests/parity/)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch

pytest.importorskip("transformers")

from diffkit import registry  # noqa: E402


@pytest.fixture
def _unet(unet_config):
    """``_unet(**overrides)``: a random tiny UNet2DConditionModel with the family's test config, changed."""
    return lambda **overrides: registry.get("model", "UNet2DConditionModel")(**{**unet_config, **overrides}).eval()


@pytest.fixture
def _vae(components):
    """``_vae(**overrides)``: a random VAE shaped as the family's test VAE, changed."""
    vae = components["vae"]
    return lambda **overrides: type(vae)(**{**vae.config.to_dict(explicit_only=True), **overrides}).eval()


def _image(size: int = 32, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8))


def _quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def depth_pipe(components, _unet):
    from diffkit_pipeline_stable_diffusion.depth_to_image import StableDiffusionDepth2ImgPipeline

    torch.manual_seed(0)
    parts = {k: components[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    return _quiet(StableDiffusionDepth2ImgPipeline(
        **parts, unet=_unet(in_channels=5), depth_estimator=None, feature_extractor=None
    ))


@pytest.fixture
def variation_pipe(components):
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from diffkit_pipeline_stable_diffusion.image_variation import StableDiffusionImageVariationPipeline

    torch.manual_seed(0)
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, projection_dim=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=32, patch_size=8,
    )).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return _quiet(StableDiffusionImageVariationPipeline(
        vae=components["vae"], image_encoder=encoder, unet=components["unet"], scheduler=components["scheduler"],
        safety_checker=None, feature_extractor=processor, requires_safety_checker=False,
    ))


@pytest.fixture
def upscale_pipe(components, _unet, _vae):
    from diffkit_pipeline_stable_diffusion.upscale import StableDiffusionUpscalePipeline

    torch.manual_seed(0)
    return _quiet(StableDiffusionUpscalePipeline(
        vae=_vae(scaling_factor=0.08333), text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=_unet(in_channels=7, num_class_embeds=1000),
        low_res_scheduler=registry.get("scheduler", "DDPMScheduler")(),
        scheduler=components["scheduler"], max_noise_level=350,
    ))


@pytest.fixture
def latent_upscale_pipe(components, _unet):
    from diffkit_pipeline_stable_diffusion.latent_upscale import StableDiffusionLatentUpscalePipeline

    torch.manual_seed(0)
    scheduler = registry.get("scheduler", "EulerDiscreteScheduler")(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type="sample", steps_offset=1
    )
    unet = _unet(in_channels=8, out_channels=5, time_embedding_type="fourier", time_cond_proj_dim=128 + 32)
    return _quiet(StableDiffusionLatentUpscalePipeline(
        vae=components["vae"], text_encoder=components["text_encoder"], tokenizer=components["tokenizer"],
        unet=unet, scheduler=scheduler,
    ))


CALL = {"num_inference_steps": 2, "output_type": "np"}


# -- depth to image ---------------------------------------------------------------------------
def test_depth_map_changes_the_image(depth_pipe):
    flat, ramp = torch.ones(1, 16, 16), torch.linspace(0, 1, 256).reshape(1, 16, 16)
    flat[0, 0, 0] = 2.0  # a map must not be constant: it is rescaled to [-1, 1]
    call = {"prompt": "a cat", "image": _image(), "strength": 1.0, **CALL}
    a = depth_pipe(depth_map=flat, generator=torch.Generator().manual_seed(0), **call).images
    b = depth_pipe(depth_map=ramp, generator=torch.Generator().manual_seed(0), **call).images
    assert a.shape == (1, 32, 32, 3)
    assert np.abs(a - b).max() > 1e-3


def test_depth_takes_latents_with_a_depth_map(depth_pipe):
    latents = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    out = depth_pipe(prompt="a cat", image=latents, depth_map=torch.rand(1, 24, 24), strength=0.5, **CALL)
    assert out.images.shape == (1, 32, 32, 3)
    with pytest.raises(ValueError, match="image holds latents.*pass depth_map"):
        depth_pipe(prompt="a cat", image=latents, **CALL)


def test_depth_without_estimator_or_map_says_what_to_pass(depth_pipe):
    with pytest.raises(ValueError, match="depth_map"):
        depth_pipe(prompt="a cat", image=_image(), **CALL)


def test_depth_map_of_wrong_rank(depth_pipe):
    with pytest.raises(ValueError, match=r"depth_map must be a torch tensor \(batch, height, width\)"):
        depth_pipe(prompt="a cat", image=_image(), depth_map=torch.ones(1, 1, 16, 16), **CALL)


@pytest.mark.parametrize("strength", [-0.1, 1.5])
def test_depth_strength_outside_unit_interval(depth_pipe, strength):
    with pytest.raises(ValueError, match="strength"):
        depth_pipe(prompt="a cat", image=_image(), depth_map=torch.rand(1, 16, 16), strength=strength, **CALL)


def test_depth_image_of_unsupported_type(depth_pipe):
    with pytest.raises(TypeError, match="got str"):
        depth_pipe(prompt="a cat", image="cat.png", depth_map=torch.rand(1, 16, 16), **CALL)


def test_depth_estimator_is_loaded_through_the_transformers_loader(depth_pipe, tmp_path):
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    from diffkit import DiffusionPipeline

    estimator = DPTForDepthEstimation(DPTConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=37,
        backbone_out_indices=(0, 1, 2, 3), neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, is_hybrid=False,
    )).eval()
    pipe = type(depth_pipe)(**{**depth_pipe.components, "depth_estimator": estimator,
                               "feature_extractor": DPTImageProcessor(size={"height": 32, "width": 32})})
    pipe.save_pretrained(tmp_path)
    loaded = _quiet(DiffusionPipeline.from_pretrained(tmp_path))
    assert type(loaded.depth_estimator).__name__ == "DPTForDepthEstimation"
    call = {"prompt": "a cat", "image": _image(), "strength": 1.0, **CALL}
    a = _quiet(pipe)(generator=torch.Generator().manual_seed(0), **call).images
    b = loaded(generator=torch.Generator().manual_seed(0), **call).images
    assert np.array_equal(a, b)


# -- image variation --------------------------------------------------------------------------
def test_variation_batches_images(variation_pipe):
    out = variation_pipe([_image(seed=1), _image(seed=2)], num_images_per_prompt=2, height=16, width=16, **CALL)
    assert out.images.shape == (4, 16, 16, 3)
    assert out.nsfw_content_detected is None


@pytest.mark.parametrize(("image", "error", "match"), [
    ("cat.png", TypeError, "got str"),
    (np.zeros((32, 32, 3), dtype=np.float32), TypeError, "got ndarray"),
    ([], TypeError, "empty"),
    (torch.zeros(3, 32, 32), ValueError, r"CLIP pixel values \(batch, 3, height, width\)"),
])
def test_variation_rejects_bad_images(variation_pipe, image, error, match):
    with pytest.raises(error, match=match):
        variation_pipe(image, **CALL)


def test_variation_image_encoder_must_fit_the_unet(variation_pipe, _unet):
    with pytest.raises(ValueError, match="projection_dim=32 but unet has cross_attention_dim=16"):
        type(variation_pipe)(**{**variation_pipe.components, "unet": _unet(cross_attention_dim=16)},
                             **variation_pipe.settings)


# -- x4 upscaler --------------------------------------------------------------------------------
def test_upscale_output_is_vae_factor_larger(upscale_pipe):
    out = upscale_pipe(prompt="a cat", image=_image(16), noise_level=10, **CALL)
    assert out.images.shape == (1, 32, 32, 3)


def test_upscale_noise_level_changes_the_image(upscale_pipe):
    call = {"prompt": "a cat", "image": _image(16), **CALL}
    a = upscale_pipe(noise_level=0, generator=torch.Generator().manual_seed(0), **call).images
    b = upscale_pipe(noise_level=300, generator=torch.Generator().manual_seed(0), **call).images
    assert np.abs(a - b).max() > 1e-3


def test_noise_level_above_max_noise_level(upscale_pipe):
    with pytest.raises(ValueError, match=r"noise_level=351 is above max_noise_level=350"):
        upscale_pipe(prompt="a cat", image=_image(16), noise_level=351, **CALL)


def test_negative_noise_level(upscale_pipe):
    with pytest.raises(ValueError, match="noise_level must be an integer >= 0"):
        upscale_pipe(prompt="a cat", image=_image(16), noise_level=-1, **CALL)


def test_upscale_takes_one_chw_tensor_for_one_prompt(upscale_pipe):
    assert upscale_pipe(prompt="a cat", image=torch.rand(3, 16, 16), **CALL).images.shape == (1, 32, 32, 3)


def test_upscale_image_count_must_match_prompts(upscale_pipe):
    with pytest.raises(ValueError, match="prompt has batch size 2 but image has batch size 1"):
        upscale_pipe(prompt=["a cat", "a dog"], image=[_image(16)], **CALL)


def test_upscale_image_of_unsupported_type(upscale_pipe):
    with pytest.raises(TypeError, match="got int"):
        upscale_pipe(prompt="a cat", image=3, **CALL)


def test_upscale_unet_of_the_wrong_width(upscale_pipe, _unet):
    pipe = type(upscale_pipe)(**{**upscale_pipe.components, "unet": _unet(num_class_embeds=1000)},
                              **upscale_pipe.settings)
    with pytest.raises(ValueError, match=r"in_channels=4 .* 4 latent \+ 3 image channels"):
        _quiet(pipe)(prompt="a cat", image=_image(16), **CALL)


def test_upscale_warns_about_another_vae_scaling(upscale_pipe, _vae, caplog):
    with caplog.at_level("WARNING", logger="diffkit.pipeline.stable_diffusion"):
        type(upscale_pipe)(**{**upscale_pipe.components, "vae": _vae()}, **upscale_pipe.settings)
    assert "0.08333" in caplog.text


@pytest.mark.parametrize(("force_upcast", "decoded_in"), [(True, torch.float32), (False, torch.float16)])
def test_upscale_float16_vae_decodes_as_force_upcast_says(upscale_pipe, _vae, force_upcast, decoded_in):
    vae = _vae(scaling_factor=0.08333, force_upcast=force_upcast).to(torch.float16)
    seen = []
    vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    pipe = _quiet(type(upscale_pipe)(**{**upscale_pipe.components, "vae": vae}, **upscale_pipe.settings))
    images = pipe(prompt="a cat", image=_image(16), **CALL).images
    assert seen == [decoded_in]  # the float32 copy carries the hook along
    assert np.isfinite(images).all()
    assert pipe.vae.dtype == torch.float16  # the shared VAE is left as it was


# -- latent upscaler ---------------------------------------------------------------------------
def test_latent_upscale_doubles_latents(latent_upscale_pipe):
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = latent_upscale_pipe(prompt="a cat", image=latents, num_inference_steps=2, output_type="latent")
    assert out.images.shape == (1, 4, 16, 16)


def test_latent_upscale_needs_pooled_with_prompt_embeds(latent_upscale_pipe):
    with pytest.raises(ValueError, match="pooled_prompt_embeds"):
        latent_upscale_pipe(prompt_embeds=torch.zeros(1, 77, 32), image=torch.zeros(1, 4, 8, 8), **CALL)


def test_latent_upscale_image_of_unsupported_type(latent_upscale_pipe):
    with pytest.raises(TypeError, match="got dict"):
        latent_upscale_pipe(prompt="a cat", image={}, **CALL)


def test_latent_upscale_image_count_must_match_prompts(latent_upscale_pipe):
    with pytest.raises(ValueError, match="prompt has batch size 1 but image has batch size 2"):
        latent_upscale_pipe(prompt="a cat", image=torch.zeros(2, 4, 8, 8), **CALL)


def test_latent_upscale_unet_of_the_wrong_width(latent_upscale_pipe, _unet):
    pipe = type(latent_upscale_pipe)(**{**latent_upscale_pipe.components, "unet": _unet(time_cond_proj_dim=160)})
    with pytest.raises(ValueError, match=r"in_channels=4 .* 4 latent \+ 4 conditioning channels"):
        _quiet(pipe)(prompt="a cat", image=torch.zeros(1, 4, 8, 8), **CALL)


# -- one pipeline object, concurrent calls -------------------------------------------------------
@pytest.mark.parametrize("which", ["depth_pipe", "upscale_pipe"])
def test_concurrent_calls_give_the_sequential_images(request, which):
    from concurrent.futures import ThreadPoolExecutor

    pipe = request.getfixturevalue(which)
    size = 32 if which == "depth_pipe" else 16
    extra = {"depth_map": torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(5)), "strength": 0.6} \
        if which == "depth_pipe" else {"noise_level": 40}

    def run(seed: int):
        return pipe(prompt=f"a cat {seed}", image=_image(size, seed), generator=torch.Generator().manual_seed(seed),
                    num_inference_steps=3, output_type="np", **extra).images

    sequential = [run(seed) for seed in range(4)]
    with ThreadPoolExecutor(4) as pool:
        concurrent = list(pool.map(run, range(4)))
    for a, b in zip(sequential, concurrent, strict=True):
        assert np.array_equal(a, b)

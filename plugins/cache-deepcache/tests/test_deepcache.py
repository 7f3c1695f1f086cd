"""DeepCache on a tiny SD pipeline: full passes as the interval says, interval=1 equal to no cache,
partial steps close to the uncached result, per-call state (threads), exact removal."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
import torch

import diffkit_cache_deepcache.hooks as hooks
from diffkit import registry
from diffkit.errors import ComponentNotFoundError
from diffkit.testing import plugin

pytest.importorskip("transformers")
pytest.importorskip("diffkit_pipeline_stable_diffusion")

UNET = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16, 16),
    norm_num_groups=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
    attention_head_dim=4,
)
VAE = dict(
    block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=2,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 set_alpha_to_one=False, steps_offset=1)


@pytest.fixture(autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from diffkit.testing import write_clip_tokenizer_files
    from diffkit_pipeline_stable_diffusion import StableDiffusionPipeline

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(write_clip_tokenizer_files(tmp_path_factory.mktemp("tok")))
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )).eval()
    pipeline = StableDiffusionPipeline(
        vae=registry.get("model", "AutoencoderKL")(**VAE).eval(), text_encoder=text_encoder, tokenizer=tokenizer,
        unet=registry.get("model", "UNet2DConditionModel")(**UNET).eval(),
        scheduler=registry.get("scheduler", "DDIMScheduler")(**SCHEDULER),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


@pytest.fixture
def cached(pipe):
    """``cached(**options)`` enables DeepCache on the shared pipe; it is disabled after the test."""
    yield lambda **options: pipe.enable_step_cache("deepcache", **options)
    pipe.disable_step_cache()


def generate(pipe, steps=6, seed=0):
    return pipe("a digit", num_inference_steps=steps, height=32, width=32, output_type="latent",
                generator=torch.Generator().manual_seed(seed)).images


def count_full_passes(pipe):
    """A list whose length grows by one for every UNet call that runs its deepest block (a full pass)."""
    calls: list[int] = []
    handle = pipe.unet.mid_block.resnets[0].register_forward_hook(lambda *a: calls.append(1))
    return calls, handle


def test_registration_and_light_hooks(diffkit_registry):
    with plugin(hooks, dist="diffkit-cache-deepcache") as info:
        assert info.provides == {"step_cache": ["deepcache"]}
        assert diffkit_registry.get("step_cache", "deepcache").__name__ == "DeepCache"
    code = "import sys, diffkit_cache_deepcache.hooks; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_interval_one_is_exactly_uncached(pipe, cached):
    reference = generate(pipe)
    cached(interval=1)
    assert torch.equal(generate(pipe), reference)


@pytest.mark.parametrize(("interval", "steps", "full"), [(2, 6, 3), (3, 6, 2), (3, 7, 3), (10, 4, 1)])
def test_full_passes_follow_the_interval(pipe, cached, interval, steps, full):
    cache = cached(interval=interval)
    calls, handle = count_full_passes(pipe)
    try:
        latents = generate(pipe, steps=steps)
    finally:
        handle.remove()
    assert len(calls) == full
    assert torch.isfinite(latents).all()
    assert repr(cache) == f"DeepCache(interval={interval}, branch=1, component='unet')"


@pytest.mark.parametrize("branch", [1, 2])
def test_partial_steps_stay_close_to_uncached(pipe, cached, branch):
    reference = generate(pipe)
    cached(interval=2, branch=branch)
    latents = generate(pipe)
    difference = (latents - reference).abs()
    assert torch.isfinite(latents).all()
    assert difference.max() > 0  # the partial steps really reused something
    # random tiny weights: the cached deep features move the result by a fraction of its scale
    assert difference.mean() < 0.25 * reference.abs().mean()


def test_each_call_starts_fresh_and_the_unet_alone_is_uncached(pipe, cached):
    cached(interval=3)
    first = generate(pipe, steps=4)
    assert torch.equal(generate(pipe, steps=4), first)  # nothing carried over between calls
    sample, context = torch.randn(2, 4, 16, 16), torch.randn(2, 5, 32)
    with torch.no_grad():
        outside = [pipe.unet(sample, torch.tensor(t), context).sample for t in (900, 800)]
    pipe.disable_step_cache()
    with torch.no_grad():
        plain = [pipe.unet(sample, torch.tensor(t), context).sample for t in (900, 800)]
    assert all(torch.equal(a, b) for a, b in zip(outside, plain, strict=True))


def test_concurrent_calls_keep_their_own_cache(pipe, cached):
    cached(interval=2)
    expected = {seed: generate(pipe, steps=4, seed=seed) for seed in (1, 2, 3)}
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def worker(seed):
        try:
            torch.set_num_threads(1)
            results[seed] = generate(pipe, steps=4, seed=seed)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (1, 2, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(torch.equal(results[s], expected[s]) for s in expected)


def test_disable_restores_the_unet_exactly(pipe):
    reference = generate(pipe, steps=3)
    before = {name: dict(m.__dict__) for name, m in pipe.unet.named_modules()}
    pipe.enable_step_cache("deepcache", interval=2, branch=2)
    assert any("forward" in m.__dict__ for m in pipe.unet.modules())
    pipe.disable_step_cache()
    after = {name: dict(m.__dict__) for name, m in pipe.unet.named_modules()}
    assert after.keys() == before.keys()
    assert all(after[n].keys() == before[n].keys() for n in before)
    assert not pipe.unet._forward_pre_hooks
    assert pipe.step_cache is None
    assert torch.equal(generate(pipe, steps=3), reference)


def test_a_new_unet_gets_the_cache_and_the_old_one_is_restored(pipe, cached):
    cached(interval=2)
    old = pipe.unet
    new = registry.get("model", "UNet2DConditionModel")(**UNET).eval()
    pipe.unet = new
    try:
        assert not any("forward" in m.__dict__ for m in old.modules())
        assert any("forward" in m.__dict__ for m in new.modules())
    finally:
        pipe.unet = old


def test_bad_options_and_models_are_named(pipe):
    with pytest.raises(ValueError, match="interval=0"):
        pipe.enable_step_cache("deepcache", interval=0)
    with pytest.raises(ValueError, match="branch=3.*between 1 and 2"):
        pipe.enable_step_cache("deepcache", branch=3)
    assert pipe.step_cache is None
    with pytest.raises(ComponentNotFoundError):
        pipe.enable_step_cache("no-such-cache")
    with pytest.raises(TypeError, match="down_blocks"):
        pipe.enable_step_cache("deepcache", component="vae")
    with pytest.raises(TypeError, match="options are only accepted"):
        pipe.enable_step_cache(registry.get("step_cache", "deepcache")(), interval=2)

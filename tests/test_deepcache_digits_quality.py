"""DeepCache's quality cost on the text-to-image demo ``diffkit/tiny-sd-digits``.

The demo's own judge (``diffkit_pretrained_tiny_sd_digits.quality``: the DDPM demo's digit
classifier) scores 8 images per digit, drawn with the recommended call (DDIM, 25 steps,
guidance 5) and the same seed, without the cache and with DeepCache at interval 3. The figures
are printed (``-s``); the test bounds the loss of prompt accuracy so that a broken cache (e.g.
stale features from another call) cannot pass. It skips while the demo itself misses its own
bar (untrained weights), where no loss could be seen.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("sklearn")
pytest.importorskip("diffkit_cache_deepcache")
digits = pytest.importorskip("diffkit_pretrained_tiny_sd_digits")

from diffkit import DiffusionPipeline  # noqa: E402

SEED = 0
PER_DIGIT = 8
#: the most prompt accuracy DeepCache (interval 3) may cost on this demo (absolute share of hits)
MAX_LOSS = 0.25

if not (digits.CHECKPOINT / "unet" / "diffusion_pytorch_model.safetensors").is_file():
    pytest.skip("the tiny-sd-digits checkpoint has no trained UNet yet", allow_module_level=True)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def judged():
    from diffkit_pretrained_tiny_sd_digits.quality import (
        MIN_HIT_FRACTION,
        PromptedVerdict,
        classifier,
        draw_every_digit,
    )

    judge = classifier(seed=SEED)
    pipe = DiffusionPipeline.from_pretrained(digits.NAME)
    pipe.set_progress_bar_config(disable=True)

    def verdict(interval: int | None) -> PromptedVerdict:
        if interval is None:
            pipe.disable_step_cache()
        else:
            pipe.enable_step_cache("deepcache", interval=interval)
        images, wanted = draw_every_digit(pipe, PER_DIGIT, seed=SEED, **digits.RECOMMENDED_CALL)
        return PromptedVerdict.judge(judge, images, wanted)

    uncached = verdict(None)
    print(f"tiny-sd-digits DDIM 25 steps, guidance 5, no cache: {uncached.summary()}")
    if uncached.hit_fraction < MIN_HIT_FRACTION:
        pytest.skip(f"the demo misses its own bar without the cache ({uncached.summary()}): not trained yet?")
    cached = verdict(3)
    pipe.disable_step_cache()
    print(f"tiny-sd-digits DDIM 25 steps, guidance 5, DeepCache interval=3: {cached.summary()}")
    return uncached, cached


def test_deepcache_costs_little_prompt_accuracy(judged):
    uncached, cached = (v.hit_fraction for v in judged)
    assert cached >= uncached - MAX_LOSS, f"DeepCache interval=3: {cached:.0%} hits against {uncached:.0%} without"

"""StableDiffusionSafetyChecker against diffusers: same embeddings, same flags, same black images, both ways."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from diffkit_models_safety_checker import StableDiffusionSafetyChecker

transformers = pytest.importorskip("transformers")
sc_module = pytest.importorskip("diffusers.pipelines.stable_diffusion.safety_checker")

BATCH = 3


def tiny_clip_config():
    return transformers.CLIPConfig(
        text_config={"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 50},
        vision_config={"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
                       "image_size": 16, "patch_size": 4},
        projection_dim=8,
    )


def reference_embeds(checker, clip_input):
    with torch.no_grad():
        return checker.visual_projection(checker.vision_model(clip_input)[1])


def midpoint_threshold(cos: torch.Tensor, image: int, concept: int) -> float:
    """A threshold that only ``image`` passes for ``concept``, with a margin far above the 0.001 rounding."""
    others = torch.cat([cos[:image, concept], cos[image + 1:, concept]])
    margin = (cos[image, concept] - others.max()).item()
    assert margin > 0.01, margin
    return cos[image, concept].item() - margin / 2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A diffusers checker whose thresholds flag image 0 directly and image 1 through the special-care
    adjustment only (score -0.005 + 0.01), never image 2; saved by diffusers.

    The concept vectors are the images' embeddings minus their mean, so each image is nearest its own.
    """
    torch.manual_seed(0)
    checker = sc_module.StableDiffusionSafetyChecker(tiny_clip_config()).eval()
    clip_input = torch.randn(BATCH, 3, 16, 16)
    embeds = reference_embeds(checker, clip_input)
    directions = embeds - embeds.mean(0)
    cos = torch.nn.functional.normalize(embeds) @ torch.nn.functional.normalize(directions).t()
    with torch.no_grad():
        checker.concept_embeds.copy_(torch.randn(17, 8))
        checker.special_care_embeds.copy_(torch.randn(3, 8))
        checker.concept_embeds_weights.fill_(2.0)
        checker.special_care_embeds_weights.fill_(2.0)
        checker.concept_embeds[0] = directions[0]
        checker.concept_embeds_weights[0] = midpoint_threshold(cos, 0, 0)
        checker.special_care_embeds[1] = directions[1]
        checker.special_care_embeds_weights[1] = midpoint_threshold(cos, 1, 1)
        checker.concept_embeds[5] = directions[1]
        checker.concept_embeds_weights[5] = cos[1, 1].item() + 0.005
    root = tmp_path_factory.mktemp("safety")
    checker.save_pretrained(root / "diffusers")
    return checker, clip_input, root


def run_both(ours, theirs, clip_input, images):
    mine, ref = images.copy() if isinstance(images, np.ndarray) else images.clone(), \
        images.copy() if isinstance(images, np.ndarray) else images.clone()
    out_ours, flags_ours = ours(clip_input=clip_input, images=mine)
    out_ref, flags_ref = theirs(clip_input=clip_input, images=ref)
    return out_ours, flags_ours, out_ref, flags_ref


def test_loads_what_diffusers_saved_and_matches(saved):
    checker, clip_input, root = saved
    ours = StableDiffusionSafetyChecker.from_pretrained(root / "diffusers")
    assert ours.dtype == torch.float32
    diff = (ours.image_embeds(clip_input) - reference_embeds(checker, clip_input)).abs().max().item()
    assert diff <= 1e-5, diff
    images = np.random.default_rng(0).random((BATCH, 16, 16, 3)).astype(np.float32)
    out_ours, flags_ours, out_ref, flags_ref = run_both(ours, checker, clip_input, images)
    assert flags_ours == flags_ref == [True, True, False]
    np.testing.assert_array_equal(out_ours, out_ref)
    assert out_ours.dtype == np.float32 and not out_ours[0].any() and out_ours[2].any()
    tensors = torch.rand(BATCH, 3, 16, 16)
    out_ours, flags_ours, out_ref, flags_ref = run_both(ours, checker, clip_input, tensors)
    assert flags_ours == flags_ref and torch.equal(out_ours, out_ref)


def test_without_the_adjustment_image_1_passes(saved):
    checker, clip_input, root = saved
    ours = StableDiffusionSafetyChecker.from_pretrained(root / "diffusers")
    with torch.no_grad():
        ours.special_care_embeds_weights.fill_(2.0)
    images = np.ones((BATCH, 4, 4, 3), dtype=np.float32)
    _, flags = ours(clip_input=clip_input, images=images)
    assert flags == [True, False, False]


def test_nothing_flagged_leaves_images_untouched(saved):
    checker, clip_input, root = saved
    ours = StableDiffusionSafetyChecker.from_pretrained(root / "diffusers")
    with torch.no_grad():
        ours.concept_embeds_weights.fill_(2.0)
    images = [np.full((4, 4, 3), 0.5, dtype=np.float32) for _ in range(BATCH)]
    out, flags = ours(clip_input=clip_input, images=images)
    assert flags == [False] * BATCH and out is images and all((im == 0.5).all() for im in out)


def test_both_vision_layouts_load(saved, tmp_path):
    """diffusers under transformers 5 saved ``vision_model.embeddings...``; Hub checkpoints (transformers 4)
    hold ``vision_model.vision_model.embeddings...``, written here by hand."""
    checker, clip_input, root = saved
    state = load_file(root / "diffusers" / "model.safetensors")
    assert "vision_model.embeddings.class_embedding" in state
    nested = {("vision_model." + k if k.startswith("vision_model.") else k): v for k, v in state.items()}
    nested["vision_model.vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # old checkpoints keep it
    (tmp_path / "v4").mkdir()
    (tmp_path / "v4" / "config.json").write_text((root / "diffusers" / "config.json").read_text())
    save_file(nested, str(tmp_path / "v4" / "model.safetensors"), metadata={"format": "pt"})
    expected = reference_embeds(checker, clip_input)
    for folder in (root / "diffusers", tmp_path / "v4"):
        ours = StableDiffusionSafetyChecker.from_pretrained(folder)
        assert (ours.image_embeds(clip_input) - expected).abs().max() <= 1e-5


def test_diffusers_loads_what_we_save(saved, tmp_path):
    checker, clip_input, root = saved
    ours = StableDiffusionSafetyChecker.from_pretrained(root / "diffusers")
    ours.save_pretrained(tmp_path / "ours")
    keys = set(load_file(tmp_path / "ours" / "model.safetensors"))
    assert "vision_model.vision_model.embeddings.class_embedding" in keys  # the layout of Hub checkpoints
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["projection_dim"] == 8 and config["vision_config"]["image_size"] == 16
    again = sc_module.StableDiffusionSafetyChecker.from_pretrained(tmp_path / "ours").eval()
    assert (reference_embeds(again, clip_input) - reference_embeds(checker, clip_input)).abs().max() <= 1e-5
    images = torch.rand(BATCH, 3, 16, 16)
    out_ours, flags_ours, out_ref, flags_ref = run_both(ours, again, clip_input, images)
    assert flags_ours == flags_ref == [True, True, False] and torch.equal(out_ours, out_ref)

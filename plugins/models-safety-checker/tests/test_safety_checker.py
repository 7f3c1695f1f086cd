"""StableDiffusionSafetyChecker: registration, config, the scoring rule and the black-out."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffkit.testing
from diffkit import ConfigError
from diffkit_models_safety_checker import hooks
from diffkit_models_safety_checker.safety_checker import (
    SafetyCheckerConfig,
    StableDiffusionSafetyChecker,
    black_out,
    nsfw_flags,
)

TINY = {"projection_dim": 4, "vision_config": {"hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
                                               "num_attention_heads": 2, "image_size": 8, "patch_size": 4}}


def test_registered_and_light(diffkit_registry):
    with diffkit.testing.plugin(hooks, dist="diffkit-models-safety-checker"):
        assert diffkit_registry.get("model", "StableDiffusionSafetyChecker") is StableDiffusionSafetyChecker
    code = "import sys, diffkit_models_safety_checker.hooks; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_clip_config_round_trip(tmp_path, caplog):
    data = {**TINY, "model_type": "clip", "architectures": ["StableDiffusionSafetyChecker"], "text_config": {"a": 1},
            "logit_scale_init_value": 2.6592, "transformers_version": "4.40.0"}
    data["vision_config"] = {**data["vision_config"], "dropout": 0.0, "projection_dim": 4}
    model = StableDiffusionSafetyChecker(SafetyCheckerConfig.from_dict(data))
    assert "not used" not in caplog.text  # a CLIPConfig's own keys are expected
    written = json.loads(model.save_config(tmp_path).read_text())
    vision = written.pop("vision_config")
    assert vision == {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5, "num_channels": 3, **data.pop("vision_config")}
    assert {k: v for k, v in written.items() if not k.startswith("_")} == data
    assert model.config.vision_config.hidden_size == 8


@pytest.mark.parametrize(("vision", "field"), [({"hidden_size": 10, "num_attention_heads": 4}, "num_attention_heads"),
                                               ({"image_size": 10}, "patch_size"),
                                               ({"hidden_act": "swish"}, "hidden_act")])
def test_invalid_config_names_the_field(vision, field):
    with pytest.raises(ConfigError, match=field):
        SafetyCheckerConfig.from_dict({**TINY, "vision_config": {**TINY["vision_config"], **vision}})


def test_wrong_image_size_is_one_clear_error():
    model = StableDiffusionSafetyChecker(TINY)
    with pytest.raises(ValueError, match=r"clip_input must be \(batch, channels, 8, 8\)"):
        model(clip_input=torch.zeros(1, 3, 16, 16), images=np.zeros((1, 4, 4, 3)))


def reference_flags(special_cos: np.ndarray, concept_cos: np.ndarray, special_thr: list[float],
                    concept_thr: list[float]) -> list[bool]:
    """The rule written out score by score with numpy float32 scalars and Python's round()."""
    flags = []
    for i in range(special_cos.shape[0]):
        adjustment, bad = 0.0, False
        for j in range(special_cos.shape[1]):
            if round(special_cos[i, j] - special_thr[j] + adjustment, 3) > 0:
                adjustment = 0.01
        for j in range(concept_cos.shape[1]):
            bad |= bool(round(concept_cos[i, j] - concept_thr[j] + adjustment, 3) > 0)
        flags.append(bad)
    return flags


cosines = st.floats(-1, 1, width=32)
#: score offsets around the 0.0005 rounding edge, and around -0.01 where the special-care adjustment decides
OFFSETS = st.sampled_from([-0.3, 0.0, 0.0004, 0.0005, 0.0006, -0.0095, -0.0094, -0.0106, 0.02])


@settings(max_examples=60, deadline=None)
@given(data=st.data(), batch=st.integers(1, 3))
def test_flags_follow_the_rounded_score_rule(data, batch):
    special = np.array(data.draw(st.lists(cosines, min_size=batch * 3, max_size=batch * 3)),
                       dtype=np.float32).reshape(batch, 3)
    concept = np.array(data.draw(st.lists(cosines, min_size=batch * 2, max_size=batch * 2)),
                       dtype=np.float32).reshape(batch, 2)
    # thresholds put image 0's scores at the drawn offsets, where rounding and adjustment decide
    special_thr = [float(np.float32(special[0, j] - data.draw(OFFSETS))) for j in range(3)]
    concept_thr = [float(np.float32(concept[0, j] - data.draw(OFFSETS))) for j in range(2)]
    got = nsfw_flags(torch.from_numpy(special), torch.from_numpy(concept), torch.tensor(special_thr),
                     torch.tensor(concept_thr)).tolist()
    assert got == reference_flags(special, concept, special_thr, concept_thr)


@pytest.mark.parametrize(("concept_offset", "special_offset", "expected"), [
    (0.0004, -0.3, False), (0.0006, -0.3, True), (0.02, -0.3, True),  # rounding edge
    (-0.0094, 0.0006, True), (-0.0095, 0.0006, False), (-0.0094, 0.0004, False),  # adjustment decides
])
def test_flags_at_the_edges(concept_offset, special_offset, expected):
    special = np.array([[0.25, 0.5, -0.5]], dtype=np.float32)
    concept = np.array([[0.125, 0.75]], dtype=np.float32)
    special_thr = [float(np.float32(special[0, 0] - special_offset)), 2.0, 2.0]
    concept_thr = [2.0, float(np.float32(concept[0, 1] - concept_offset))]
    got = nsfw_flags(torch.from_numpy(special), torch.from_numpy(concept), torch.tensor(special_thr),
                     torch.tensor(concept_thr)).tolist()
    assert got == reference_flags(special, concept, special_thr, concept_thr) == [expected]


def test_black_out_kinds():
    array = np.ones((2, 2, 2, 3), dtype=np.float32)
    assert black_out(array, [False, True]) is array and array[0].all() and not array[1].any()
    tensors = [torch.ones(3, 2, 2), torch.ones(3, 2, 2)]
    black_out(tensors, [True, False])
    assert not tensors[0].any() and tensors[1].all()
    arrays = [np.ones((2, 2, 3), dtype=np.float32)]
    black_out(arrays, [True])
    assert arrays[0].dtype == np.float64 and not arrays[0].any()  # as diffusers: np.zeros of the shape
    with pytest.raises(TypeError, match="images must be a tensor, a numpy array"):
        black_out(["not an image"], [True])

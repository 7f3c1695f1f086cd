"""``final_layer_norm`` and ``clip_text_hidden_states`` on both transformers layouts of CLIP text encoders."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from diffkit_loader_transformers import clip_text_hidden_states, final_layer_norm
from diffkit_loader_transformers.loader import TransformersLoader

transformers = pytest.importorskip("transformers")

LAYERS = 4
IDS = torch.tensor([[0, 5, 9, 13, 2, 1, 1], [0, 7, 30, 2, 1, 1, 1]])
MASK = (IDS != 1).long()


def config(layers: int = LAYERS):
    return transformers.CLIPTextConfig(vocab_size=64, hidden_size=16, intermediate_size=24,
                                       num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=16,
                                       projection_dim=8, bos_token_id=0, eos_token_id=2, pad_token_id=1)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    """The same weights loaded from a transformers-5 save and from a hand-written transformers-4 layout."""
    torch.manual_seed(0)
    model = transformers.CLIPTextModel(config()).eval()
    root = tmp_path_factory.mktemp("clip")
    model.save_pretrained(root / "v5")
    (root / "v4").mkdir()
    model.config.save_pretrained(root / "v4")
    save_file({f"text_model.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(root / "v4" / "model.safetensors"), metadata={"format": "pt"})
    loader = TransformersLoader()
    with_projection = transformers.CLIPTextModelWithProjection(config()).eval()
    return model, [loader.load("CLIPTextModel", root / "v5"), loader.load("CLIPTextModel", root / "v4"),
                   with_projection]


def truncated(model, keep: int):
    """An independent reference: the same encoder with only its first ``keep`` layers."""
    short = type(model)(config(keep)).eval()
    state = {k: v for k, v in model.state_dict().items() if ".layers." not in k or int(k.split(".layers.")[1].split(".")[0]) < keep}
    short.load_state_dict(state)
    return short


def test_final_layer_norm_on_both_layouts(encoders):
    _, (v5, v4, projection) = encoders
    for encoder in (v5, v4):
        assert final_layer_norm(encoder) is encoder.final_layer_norm  # transformers 5: no text_model wrapper
    assert final_layer_norm(projection) is projection.text_model.final_layer_norm
    with pytest.raises(TypeError, match="Linear is not a CLIP text encoder"):
        final_layer_norm(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("clip_skip", [1, 2, LAYERS - 1])
def test_clip_skip_equals_a_shorter_encoder(encoders, clip_skip):
    model, (v5, v4, _) = encoders
    expected = truncated(model, LAYERS - clip_skip)(IDS, attention_mask=MASK).last_hidden_state
    for encoder in (v5, v4):
        got = clip_text_hidden_states(encoder, IDS, MASK, clip_skip=clip_skip)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_no_skip_is_the_last_hidden_state(encoders):
    model, (v5, v4, projection) = encoders
    expected = model(IDS).last_hidden_state
    for encoder in (v5, v4):
        assert torch.equal(clip_text_hidden_states(encoder, IDS), expected)
        assert torch.equal(clip_text_hidden_states(encoder, IDS, clip_skip=0), expected)
    assert torch.equal(clip_text_hidden_states(projection, IDS, clip_skip=0),
                       projection(IDS).last_hidden_state)


def test_with_projection_uses_its_text_model(encoders):
    _, (_, _, projection) = encoders
    hidden = projection(IDS, output_hidden_states=True).hidden_states
    expected = projection.text_model.final_layer_norm(hidden[-2])
    assert torch.equal(clip_text_hidden_states(projection, IDS, clip_skip=1), expected)


@pytest.mark.parametrize("bad", [-1, LAYERS + 1, 1.5, True])
def test_bad_clip_skip(encoders, bad):
    _, (v5, _, _) = encoders
    with pytest.raises(ValueError, match="clip_skip"):
        clip_text_hidden_states(v5, IDS, clip_skip=bad)

"""The layers of the conditioned UNet: cross-attention, transformer block, spatial transformer,
the extra time embeddings, and the upsampler's explicit output size."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from diffkit_models_unet.cross_attention import CrossAttention
from diffkit_models_unet.embeddings import AttentionPooling, TimestepEmbedding
from diffkit_models_unet.sampling import Upsample2D
from diffkit_models_unet.spatial_transformer import SpatialTransformer


def _reference_attention(layer: CrossAttention, x, context, bias=None):
    """softmax(q kᵀ / sqrt(d) + bias) v per head, written out."""
    q, k, v = layer.to_q(x), layer.to_k(context), layer.to_v(context)
    batch, tokens, _ = x.shape

    def heads(t):
        return t.view(batch, t.shape[1], layer.heads, layer.head_dim).transpose(1, 2)

    scores = heads(q) @ heads(k).transpose(-1, -2) * layer.head_dim**-0.5
    if bias is not None:
        scores = scores + bias[:, :, None, :]
    out = (scores.softmax(-1) @ heads(v)).transpose(1, 2).reshape(batch, tokens, -1)
    return layer.to_out[0](out)


@settings(max_examples=10, deadline=None)
@given(heads=st.integers(1, 3), head_dim=st.integers(1, 4), tokens=st.integers(1, 6), context_tokens=st.integers(1, 5))
def test_cross_attention_is_softmax_attention_over_the_context(heads, head_dim, tokens, context_tokens):
    torch.manual_seed(0)
    layer = CrossAttention(6, heads, head_dim, context_dim=5)
    x, context = torch.randn(2, tokens, 6), torch.randn(2, context_tokens, 5)
    bias = torch.zeros(2, 1, context_tokens)
    bias[0, 0, 0] = -10000.0
    with torch.no_grad():
        got = layer(x, context, bias)
        expected = _reference_attention(layer, x, context, bias)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_self_attention_when_no_context_is_given():
    torch.manual_seed(0)
    layer = CrossAttention(6, 2, 3)
    x = torch.randn(1, 4, 6)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _reference_attention(layer, x, x), atol=1e-5, rtol=1e-5)


def test_projections_have_no_bias_and_the_output_has_one():
    layer = CrossAttention(6, 2, 3, context_dim=5)
    assert layer.to_q.bias is None and layer.to_k.bias is None and layer.to_v.bias is None
    assert layer.to_out[0].bias is not None
    assert layer.to_k.in_features == 5


def test_a_mask_of_the_wrong_length_names_both_lengths():
    layer = CrossAttention(6, 2, 3, context_dim=5)
    with pytest.raises(ValueError, match="covers 3 tokens but this attention layer attends over 4"):
        layer(torch.randn(2, 7, 6), torch.randn(2, 4, 5), torch.zeros(2, 1, 3))


@settings(max_examples=8, deadline=None)
@given(
    linear=st.booleans(),
    height=st.integers(1, 5),
    width=st.integers(1, 5),
    layers=st.integers(1, 2),
    only_cross=st.booleans(),
)
def test_spatial_transformer_keeps_the_shape_and_adds_a_residual(linear, height, width, layers, only_cross):
    torch.manual_seed(0)
    block = SpatialTransformer(
        8,
        2,
        4,
        num_layers=layers,
        context_dim=5,
        norm_num_groups=4,
        linear_projection=linear,
        only_cross_attention=only_cross,
    )
    x = torch.randn(2, 8, height, width)
    with torch.no_grad():
        for param in (block.proj_out.weight, block.proj_out.bias):
            param.zero_()
        out = block(x, torch.randn(2, 3, 5))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)  # a zero output projection leaves only the residual


def test_timestep_embedding_adds_the_projected_condition_and_post_activation():
    torch.manual_seed(0)
    emb = TimestepEmbedding(4, 6, cond_proj_dim=3, post_act_fn="silu")
    x, cond = torch.randn(2, 4), torch.randn(2, 3)
    with torch.no_grad():
        expected = F.silu(emb.linear_2(F.silu(emb.linear_1(x + cond @ emb.cond_proj.weight.T))))
        torch.testing.assert_close(emb(x, cond), expected)
    with pytest.raises(ValueError, match="time_cond_proj_dim"):
        TimestepEmbedding(4, 6)(x, cond)


def test_attention_pooling_returns_one_vector_per_sequence():
    torch.manual_seed(0)
    pool = AttentionPooling(2, 6)
    assert pool(torch.randn(3, 4, 6)).shape == (3, 6)
    with pytest.raises(ValueError, match="not divisible by num_heads=4"):
        AttentionPooling(4, 6)


def test_upsampler_resizes_to_an_explicit_size():
    up = Upsample2D(2)
    x = torch.randn(1, 2, 3, 5)
    assert up(x).shape == (1, 2, 6, 10)
    assert up(x, (5, 9)).shape == (1, 2, 5, 9)

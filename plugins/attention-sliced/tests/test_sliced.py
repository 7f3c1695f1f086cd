import pytest
import torch
import torch.nn.functional as F

from diffkit import registry
from diffkit.attention import resolve_backend
from diffkit_attention_sliced.sliced import SlicedBackend


def qkv(batch=2, heads=4, q_len=10, k_len=10, dim=8, v_dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, heads, q_len, dim, generator=g),
        torch.randn(batch, heads, k_len, dim, generator=g),
        torch.randn(batch, heads, k_len, v_dim, generator=g),
    )


@pytest.mark.parametrize("slice_size", ["auto", "max", 1, 2, 3, 4])
def test_matches_sdpa(slice_size):
    q, k, v = qkv()
    expected = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(SlicedBackend(slice_size)(q, k, v), expected, rtol=0, atol=1e-5)


def test_cross_attention_shapes_custom_scale():
    q, k, v = qkv(batch=3, heads=2, q_len=7, k_len=5, dim=4, v_dim=6)
    expected = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    out = SlicedBackend(1)(q, k, v, scale=0.3)
    assert out.shape == (3, 2, 7, 6)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("shape", [(2, 1, 6, 9), (6, 9), (2, 4, 6, 9)])
def test_masks_boolean_and_additive_broadcast_like_sdpa(shape):
    q, k, v = qkv(q_len=6, k_len=9)
    g = torch.Generator().manual_seed(1)
    keep = torch.rand(shape, generator=g) > 0.4
    keep[..., 0] = True  # every row attends somewhere
    additive = torch.randn(shape, generator=g)
    for mask in (keep, additive):
        expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        torch.testing.assert_close(SlicedBackend(3)(q, k, v, attn_mask=mask), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    ("slice_size", "heads", "per_slice"),
    [("auto", 8, 4), ("auto", 5, 2), ("auto", 1, 1), ("max", 8, 1), (3, 8, 3), (8, 8, 8)],
)
def test_heads_per_slice_follows_diffusers(slice_size, heads, per_slice):
    assert SlicedBackend(slice_size).heads_per_slice(heads) == per_slice


def test_scores_are_computed_one_slice_at_a_time(monkeypatch):
    shapes = []
    baddbmm = torch.baddbmm

    def recording(*args, **kwargs):
        out = baddbmm(*args, **kwargs)
        shapes.append(tuple(out.shape))
        return out

    monkeypatch.setattr(torch, "baddbmm", recording)
    q, k, v = qkv(batch=2, heads=8, q_len=5, k_len=5)
    SlicedBackend("auto")(q, k, v)
    assert shapes == [(4, 5, 5)] * 4  # 2 images x 8 heads in slices of 4 heads
    shapes.clear()
    SlicedBackend("max")(q, k, v)
    assert shapes == [(1, 5, 5)] * 16
    shapes.clear()
    SlicedBackend(3)(q, k, v)
    assert shapes == [(3, 5, 5)] * 5 + [(1, 5, 5)]


def test_a_slice_larger_than_the_heads_is_clamped_and_said_once():
    q, k, v = qkv(heads=4)
    backend = SlicedBackend(5)
    with pytest.warns(UserWarning, match=r"slice_size=5 is larger than the 4 head\(s\).*4 head\(s\) at a time") as said:
        out = backend(q, k, v)
        backend(q, k, v)
    assert len(said) == 1
    torch.testing.assert_close(out, SlicedBackend(4)(q, k, v), rtol=0, atol=0)  # the same slices as 4
    layer = torch.nn.Module()
    layer.heads = 2
    with pytest.warns(UserWarning, match=r"slice_size=3 .* attention layer 'unet.mid_block.attentions.0'"):
        SlicedBackend(3).check_layer(layer, "unet.mid_block.attentions.0")
    with pytest.warns(UserWarning):
        assert SlicedBackend(3).heads_per_slice(2) == 2


@pytest.mark.parametrize("bad", [0, -1, "half", True, 1.5, None])
def test_bad_slice_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="slice_size must be 'auto', 'max' or a positive int"):
        SlicedBackend(bad)


def test_registered_as_sliced_and_built_with_options():
    assert registry.get("attention_backend", "sliced") is SlicedBackend
    backend = resolve_backend("sliced", slice_size="max")
    assert isinstance(backend, SlicedBackend) and backend.options() == {"slice_size": "max"}
    assert repr(backend) == "SlicedBackend(slice_size='max')"
    assert backend.is_available() == (True, "")


def test_bfloat16_close_to_sdpa():
    q, k, v = (t.to(torch.bfloat16) for t in qkv())
    out = SlicedBackend("auto")(q, k, v)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), F.scaled_dot_product_attention(q, k, v).float(), rtol=0, atol=2e-2)

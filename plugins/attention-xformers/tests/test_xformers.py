"""The xformers backend without xformers: availability reasons, and the call against a stand-in.

The stand-in ``xformers.ops`` computes attention in xformers' ``(batch, tokens, heads,
head_dim)`` layout, so comparing with SDPA checks the layout, scale and mask handed over.
"""

from __future__ import annotations

import sys
import types

import pytest
import torch
import torch.nn.functional as F

from diffkit import registry
from diffkit.attention import resolve_backend
from diffkit_attention_xformers import xformers_backend
from diffkit_attention_xformers.xformers_backend import XFormersBackend, xformers_ops


@pytest.fixture(autouse=True)
def fresh_import_cache():
    xformers_ops.cache_clear()
    yield
    xformers_ops.cache_clear()


@pytest.fixture
def no_xformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "xformers", None)  # import fails as if not installed


@pytest.fixture
def fake_xformers(monkeypatch):
    calls = []

    def memory_efficient_attention(query, key, value, attn_bias=None, scale=None, op=None):
        calls.append({"shape": tuple(query.shape), "bias": attn_bias, "scale": scale, "op": op})
        out = F.scaled_dot_product_attention(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=attn_bias, scale=scale
        )
        return out.transpose(1, 2)

    package = types.ModuleType("xformers")
    ops = types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    package.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", package)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    return calls


def qkv(batch=2, heads=3, q_len=5, k_len=7, dim=8):
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, heads, q_len, dim, generator=g),
        torch.randn(batch, heads, k_len, dim, generator=g),
        torch.randn(batch, heads, k_len, dim, generator=g),
    )


def test_not_installed_is_unavailable_with_the_reason(no_xformers):
    ok, why = XFormersBackend().is_available()
    assert not ok and why.startswith("xformers is not installed")
    assert "diffkit-attention-xformers[xformers]" in why
    with pytest.raises(RuntimeError, match="attention backend 'xformers' is not available: xformers is not installed"):
        resolve_backend("xformers")
    with pytest.raises(RuntimeError, match="xformers is not installed"):
        XFormersBackend()(*qkv())


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (ImportError("undefined symbol: _ZN2at6native"), "xformers failed to import: ImportError: undefined symbol"),
        (ModuleNotFoundError("No module named 'triton'", name="triton"), "xformers failed to import: No module named 'triton'"),
        (ModuleNotFoundError("No module named 'xformers'", name="xformers"), "xformers is not installed"),
    ],
)
def test_import_failures_are_told_apart(monkeypatch, error, reason):
    def failing_import(name):
        raise error

    monkeypatch.setattr(xformers_backend.importlib, "import_module", failing_import)
    ok, why = XFormersBackend().is_available()
    assert not ok and why.startswith(reason)


def test_without_cuda_it_is_unavailable_even_when_installed(fake_xformers, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ok, why = XFormersBackend().is_available()
    assert not ok and "needs CUDA" in why
    ok, why = XFormersBackend().is_available("cpu")
    assert not ok and "CUDA tensors only" in why and "cpu" in why
    with pytest.raises(RuntimeError, match="CUDA tensors only"):
        XFormersBackend()(*qkv())  # CPU tensors never reach xformers
    assert fake_xformers == []


def test_the_call_hands_xformers_its_layout_scale_op_and_an_aligned_bias(fake_xformers, monkeypatch):
    monkeypatch.setattr(XFormersBackend, "is_available", lambda self, device=None: (True, ""))
    q, k, v = qkv()
    backend = XFormersBackend(attention_op="cutlass-stand-in")
    torch.testing.assert_close(backend(q, k, v, scale=0.2), F.scaled_dot_product_attention(q, k, v, scale=0.2))
    assert fake_xformers[-1]["shape"] == (2, 5, 3, 8)  # (batch, tokens, heads, head_dim)
    assert fake_xformers[-1]["scale"] == 0.2 and fake_xformers[-1]["op"] == "cutlass-stand-in"

    keep = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(3)) > 0.5
    keep[..., 0] = True
    out = backend(q, k, v, attn_mask=keep)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=keep))
    bias = fake_xformers[-1]["bias"]
    assert bias.shape == (2, 3, 5, 7) and bias.stride(-2) % 8 == 0 and bias.dtype == q.dtype
    additive = torch.randn(5, 7)
    torch.testing.assert_close(backend(q, k, v, attn_mask=additive), F.scaled_dot_product_attention(q, k, v, attn_mask=additive))


def test_registered_under_its_name_with_its_options():
    assert registry.get("attention_backend", "xformers") is XFormersBackend
    assert XFormersBackend(attention_op="op").options() == {"attention_op": "op"}
    assert repr(XFormersBackend()) == "XFormersBackend(attention_op=None)"

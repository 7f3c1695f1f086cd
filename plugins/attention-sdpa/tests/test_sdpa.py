import math

import torch

from diffkit_attention_sdpa.sdpa import SDPABackend


def test_sdpa_matches_softmax_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    expected = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), dim=-1) @ v
    torch.testing.assert_close(SDPABackend()(q, k, v), expected, rtol=1e-5, atol=1e-6)


def test_sdpa_custom_scale_and_mask():
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 2, 4, 6, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., -1] = float("-inf")
    scores = q @ k.transpose(-1, -2) * 0.5 + mask
    expected = torch.softmax(scores, dim=-1) @ v
    torch.testing.assert_close(SDPABackend()(q, k, v, attn_mask=mask, scale=0.5), expected, rtol=1e-5, atol=1e-6)

"""Classifier-free guidance numerics shared by the Stable Diffusion family."""

from __future__ import annotations

import torch


def classifier_free_guidance(uncond: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    # eps = eps_uncond + w * (eps_text - eps_uncond)
    return uncond + scale * (text - uncond)


def rescale_guidance(guided: torch.Tensor, text: torch.Tensor, rescale: float) -> torch.Tensor:
    """Pull the guided prediction's per-sample std back towards the text prediction's (Lin et al., 2023, §3.4).

    Counters the over-exposure that large guidance scales cause with zero-terminal-SNR schedules.
    """
    dims = list(range(1, text.ndim))
    # x_rescaled = x * std(text) / std(x); result = phi * x_rescaled + (1 - phi) * x
    rescaled = guided * (text.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return rescale * rescaled + (1 - rescale) * guided


def guidance_scale_embedding(scales: torch.Tensor, dim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Sinusoidal embedding of guidance scales (one per sample) for UNets with ``time_cond_proj_dim`` (LCM).

    The scale is multiplied by 1000 first, as the distilled models were trained with.
    """
    half = dim // 2
    # freq_k = exp(-k * ln(10000) / (half - 1)), k = 0..half-1; emb = [sin(1000 w freq), cos(1000 w freq)]
    step = torch.log(torch.tensor(10000.0)) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=dtype) * -step)
    angles = (scales * 1000.0).to(dtype)[:, None] * freqs[None, :]
    embedding = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return torch.nn.functional.pad(embedding, (0, 1)) if dim % 2 else embedding

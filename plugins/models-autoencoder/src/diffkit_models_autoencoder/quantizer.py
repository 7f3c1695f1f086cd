"""``VectorQuantizer``: snap each latent vector to its nearest codebook entry (VQ-VAE/VQ-GAN)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class VectorQuantizer(nn.Module):
    """A codebook of ``num_embeddings`` vectors of width ``embed_dim`` (``embedding.weight``).

    ``beta`` weighs the commitment term of the returned loss; ``legacy=True`` keeps the term
    order of the original taming-transformers code, which diffusers' checkpoints were trained with.
    """

    def __init__(self, num_embeddings: int, embed_dim: int, beta: float = 0.25, legacy: bool = True) -> None:
        super().__init__()
        self.num_embeddings = num_embeddings
        self.embed_dim = embed_dim
        self.beta = beta
        self.legacy = legacy
        self.embedding = nn.Embedding(num_embeddings, embed_dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_embeddings, 1.0 / num_embeddings)

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook entry (Euclidean) of each row of ``vectors`` ``(n, embed_dim)``."""
        return torch.argmin(torch.cdist(vectors, self.embedding.weight), dim=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[None, None, torch.Tensor]]:
        """``(z_q, loss, (None, None, indices))``: the quantized latents (NCHW), the codebook plus
        commitment loss, and the flat indices of the chosen entries."""
        channels_last = z.permute(0, 2, 3, 1).contiguous()
        idx = self.nearest(channels_last.view(-1, self.embed_dim))
        chosen = self.embedding(idx).view(channels_last.shape)
        error = torch.mean((chosen.detach() - channels_last) ** 2)
        commit = torch.mean((chosen - channels_last.detach()) ** 2)
        loss = error + self.beta * commit if self.legacy else self.beta * error + commit
        # straight-through estimator: the value of ``chosen``, the gradient of ``z``
        quantized = channels_last + (chosen - channels_last).detach()
        return quantized.permute(0, 3, 1, 2).contiguous(), loss, (None, None, idx)

    def get_codebook_entry(self, indices: torch.Tensor, shape: Sequence[int] | None) -> torch.Tensor:
        """The codebook vectors of ``indices``; with ``shape`` ``(batch, height, width, channels)``
        they come back as an NCHW tensor, else as ``(n, embed_dim)``."""
        vectors = self.embedding(indices)
        if shape is None:
            return vectors
        return vectors.view(tuple(shape)).permute(0, 3, 1, 2).contiguous()

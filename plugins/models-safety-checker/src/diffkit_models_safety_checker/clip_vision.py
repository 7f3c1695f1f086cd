"""The CLIP vision transformer (ViT) that the safety checker embeds images with.

Parameter names are those of transformers' ``CLIPVisionTransformer`` so that safety-checker
checkpoints load unchanged; attention goes through diffkit's attention backends.
"""

from __future__ import annotations

from typing import Any

import pydantic
import torch
from torch import nn

from diffkit.attention import AttentionBackend, default_backend


class CLIPVisionSettings(pydantic.BaseModel):
    """``vision_config`` of a ``CLIPConfig`` file (transformers' ``CLIPVisionConfig`` defaults).

    Keys not used here (``projection_dim``, ``dropout``, ...) are kept and written back.
    """

    model_config = pydantic.ConfigDict(extra="allow", frozen=True)

    hidden_size: int = pydantic.Field(768, gt=0)
    intermediate_size: int = pydantic.Field(3072, gt=0)
    num_hidden_layers: int = pydantic.Field(12, ge=0)
    num_attention_heads: int = pydantic.Field(12, gt=0)
    num_channels: int = pydantic.Field(3, gt=0)
    image_size: int = pydantic.Field(224, gt=0)
    patch_size: int = pydantic.Field(32, gt=0)
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = pydantic.Field(1e-5, gt=0)

    @pydantic.model_validator(mode="after")
    def _check(self) -> CLIPVisionSettings:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} must be a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple of patch_size {self.patch_size}")
        if self.hidden_act not in _ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {', '.join(sorted(_ACTIVATIONS))}")
        return self


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    # x * sigmoid(1.702 x)
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.gelu(x, approximate="tanh")


_ACTIVATIONS: dict[str, Any] = {
    "quick_gelu": quick_gelu,
    "gelu": nn.functional.gelu,
    "gelu_new": gelu_tanh,
    "gelu_pytorch_tanh": gelu_tanh,
}


class CLIPVisionEmbeddings(nn.Module):
    """Patch embedding (conv, no bias), a learned class token, and learned positions."""

    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.image_size = settings.image_size
        self.class_embedding = nn.Parameter(torch.randn(settings.hidden_size) * settings.hidden_size**-0.5)
        self.patch_embedding = nn.Conv2d(settings.num_channels, settings.hidden_size, kernel_size=settings.patch_size,
                                         stride=settings.patch_size, bias=False)
        positions = (settings.image_size // settings.patch_size) ** 2 + 1
        self.position_embedding = nn.Embedding(positions, settings.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[-2:]) != (self.image_size, self.image_size):
            raise ValueError(
                f"clip_input must be (batch, channels, {self.image_size}, {self.image_size}) images, "
                f"got shape {tuple(pixel_values.shape)}"
            )
        weight = self.patch_embedding.weight
        patches = self.patch_embedding(pixel_values.to(weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(pixel_values.shape[0], 1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding.weight.unsqueeze(0)


class CLIPSelfAttention(nn.Module):
    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        width = settings.hidden_size
        self.heads = settings.num_attention_heads
        self.head_dim = width // self.heads
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.attention_backend: AttentionBackend = default_backend()

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        return x.view(batch, tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        out = self.attention_backend(self._split(self.q_proj(x)), self._split(self.k_proj(x)),
                                     self._split(self.v_proj(x)), scale=self.scale)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, width))


class CLIPMLP(nn.Module):
    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.activation = _ACTIVATIONS[settings.hidden_act]
        self.fc1 = nn.Linear(settings.hidden_size, settings.intermediate_size)
        self.fc2 = nn.Linear(settings.intermediate_size, settings.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.self_attn = CLIPSelfAttention(settings)
        self.layer_norm1 = nn.LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)
        self.mlp = CLIPMLP(settings)
        self.layer_norm2 = nn.LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.layers = nn.ModuleList(CLIPEncoderLayer(settings) for _ in range(settings.num_hidden_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class CLIPVisionTransformer(nn.Module):
    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(settings)
        self.pre_layrnorm = nn.LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)
        self.encoder = CLIPEncoder(settings)
        self.post_layernorm = nn.LayerNorm(settings.hidden_size, eps=settings.layer_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The pooled image feature: the class token after the last layer, post-LayerNorm."""
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixel_values)))
        return self.post_layernorm(hidden[:, 0, :])


class CLIPVisionTower(nn.Module):
    """transformers-4's ``CLIPVisionModel``: the transformer under a ``vision_model`` attribute."""

    def __init__(self, settings: CLIPVisionSettings) -> None:
        super().__init__()
        self.vision_model = CLIPVisionTransformer(settings)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values)

"""CLIP text encoders in both module layouts that transformers has used.

transformers 4 wraps the CLIP text tower of ``CLIPTextModel`` in a ``text_model`` attribute
(a ``CLIPTextTransformer``; weights ``text_model.embeddings...``). transformers 5 removed that
wrapper: ``CLIPTextModel`` itself holds ``embeddings``, ``encoder`` and ``final_layer_norm``
(weights ``embeddings...``), and it strips the old prefix when loading. The same happened to
``CLIPVisionModel`` / ``vision_model``. ``CLIPTextModelWithProjection`` keeps a ``text_model``
in both (a ``CLIPTextTransformer`` in 4, a ``CLIPTextModel`` in 5). Code written against one
layout (diffusers' ``text_encoder.text_model.final_layer_norm`` for ``clip_skip``) breaks on the
other; the helpers here work on both.
"""

from __future__ import annotations

from typing import Any

import torch

#: classes whose transformers-4 weights carry a prefix that transformers 5 drops at load time
LEGACY_PREFIX = {"CLIPTextModel": "text_model", "CLIPVisionModel": "vision_model"}


def text_tower(text_encoder: Any) -> Any:
    """The module that owns ``final_layer_norm``: the encoder itself (transformers 5 ``CLIPTextModel``)
    or its ``text_model`` (transformers 4, and every ``CLIPTextModelWithProjection``)."""
    module = text_encoder
    while not hasattr(module, "final_layer_norm"):
        inner = getattr(module, "text_model", None)
        if inner is None or inner is module:
            raise TypeError(
                f"{type(text_encoder).__name__} is not a CLIP text encoder: it has no final_layer_norm "
                "(nor a text_model holding one)"
            )
        module = inner
    return module


def final_layer_norm(text_encoder: Any) -> torch.nn.Module:
    """The last LayerNorm of a CLIP text encoder, in either transformers layout."""
    return text_tower(text_encoder).final_layer_norm


def clip_text_hidden_states(
    text_encoder: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    clip_skip: int | None = None,
) -> torch.Tensor:
    """Per-token prompt embeddings of a CLIP text encoder, as Stable Diffusion uses them.

    ``clip_skip=None``: the final hidden states (``last_hidden_state``).
    ``clip_skip=k``: the output ``k`` layers before the last, passed through the final LayerNorm
    (hidden_states[-(k + 1)], hidden_states[0] being the embeddings, so ``k`` <= the layer count).
    """
    if clip_skip is None:
        return text_encoder(input_ids, attention_mask=attention_mask).last_hidden_state
    if not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or clip_skip < 0:
        raise ValueError(f"clip_skip must be None or an int >= 0, got {clip_skip!r}")
    layers = len(text_tower(text_encoder).encoder.layers)
    if clip_skip > layers:
        raise ValueError(f"clip_skip={clip_skip} is more than the text encoder's {layers} layers")
    output = text_encoder(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    return final_layer_norm(text_encoder)(output.hidden_states[-(clip_skip + 1)])

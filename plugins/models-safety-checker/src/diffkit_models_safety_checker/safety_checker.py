"""``StableDiffusionSafetyChecker``: flags images near CLIP embeddings of unsafe concepts and blacks them out.

The checkpoint is a diffusers ``safety_checker`` folder: a transformers ``CLIPConfig`` as
``config.json`` and ``model.safetensors`` with ``vision_model.vision_model.*`` (the
transformers-4 layout of real checkpoints; the transformers-5 ``vision_model.*`` layout loads
too), ``visual_projection``, 17 ``concept_embeds`` and 3 ``special_care_embeds`` with one
threshold each. ``model_index.json`` names it ``["stable_diffusion", "StableDiffusionSafetyChecker"]``.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import numpy as np
import pydantic
import torch
from torch import nn

from diffkit.config import Config
from diffkit.model import Model

from .clip_vision import CLIPVisionSettings, CLIPVisionTower

logger = logging.getLogger("diffkit.safety_checker")

CONCEPTS = 17
SPECIAL_CONCEPTS = 3
#: added to every later score of an image once one special-care concept matched
SPECIAL_CARE_ADJUSTMENT = 0.01
#: keys a transformers ``CLIPConfig`` file carries that the checker does not need (not reported)
_CLIP_CONFIG_KEYS = frozenset({"architectures", "initializer_factor", "logit_scale_init_value", "model_type",
                               "text_config", "transformers_version", "dtype", "torch_dtype", "text_config_dict",
                               "vision_config_dict", "tie_word_embeddings", "output_hidden_states", "return_dict"})


class SafetyCheckerConfig(Config):
    """The ``CLIPConfig`` of a safety checker: what its vision tower and projection use."""

    owner_name = "StableDiffusionSafetyChecker"

    projection_dim: int = pydantic.Field(512, gt=0)
    vision_config: CLIPVisionSettings = CLIPVisionSettings()

    @classmethod
    def from_dict(cls, data: Any, *, source: Any = None, report_unknown: bool = True, **overrides: Any) -> Any:
        """As :meth:`Config.from_dict`; a CLIPConfig's bookkeeping keys are kept without a warning."""
        if hasattr(data, "keys"):
            unused = {k for k in data.keys() if not str(k).startswith("_")} - set(cls.model_fields) - _CLIP_CONFIG_KEYS
            report_unknown = report_unknown and bool(unused)
        return super().from_dict(data, source=source, report_unknown=report_unknown, **overrides)


def cosine_similarity(embeds: torch.Tensor, concepts: torch.Tensor) -> torch.Tensor:
    # cos(a, b) = a/|a| . b/|b|, for every pair (image, concept)
    return nn.functional.normalize(embeds) @ nn.functional.normalize(concepts).t()


def rounded_positive(scores: torch.Tensor) -> torch.Tensor:
    """``round(score, 3) > 0`` in float32 (half to even), the test diffusers applies to each score."""
    return torch.round(scores * 1000) > 0


def nsfw_flags(special_cos: torch.Tensor, concept_cos: torch.Tensor, special_thresholds: torch.Tensor,
               concept_thresholds: torch.Tensor) -> torch.Tensor:
    """Per image, whether any concept score (similarity - threshold + adjustment) rounds above 0.

    The adjustment is 0, or ``SPECIAL_CARE_ADJUSTMENT`` from the first special-care concept
    that matched on (the later special-care scores and every concept score). All float32.
    """
    adjustment = torch.zeros(special_cos.shape[0], dtype=torch.float32)
    for index in range(special_cos.shape[1]):
        matched = rounded_positive(special_cos[:, index] - special_thresholds[index] + adjustment)
        adjustment = torch.where(matched, torch.tensor(SPECIAL_CARE_ADJUSTMENT, dtype=torch.float32), adjustment)
    scores = concept_cos - concept_thresholds + adjustment[:, None]
    return rounded_positive(scores).any(dim=1)


def black_out(images: Any, flags: list[bool]) -> Any:
    """Replace each flagged image of ``images`` (a tensor, an array, or a list of either) by zeros, in place."""
    if not any(flags):
        return images
    tensors = torch.is_tensor(images) or (isinstance(images, list) and len(images) > 0 and torch.is_tensor(images[0]))
    for index, flagged in enumerate(flags):
        if not flagged:
            continue
        if tensors:
            images[index] = torch.zeros_like(images[index])
        elif isinstance(images, np.ndarray) or isinstance(images[index], np.ndarray):
            images[index] = np.zeros(images[index].shape)
        else:
            raise TypeError(
                f"images must be a tensor, a numpy array or a list of those, got {type(images[index]).__name__}"
            )
    return images


class StableDiffusionSafetyChecker(Model):
    """CLIP image embedding compared with 17 concept and 3 special-care embeddings.

    ``forward(clip_input, images)`` returns ``(images, has_nsfw_concepts)``: ``clip_input``
    are the CLIP-preprocessed images (a ``CLIPImageProcessor``'s ``pixel_values``), ``images``
    the pipeline's output images (tensor, numpy array or a list of those), whose flagged
    entries are set to zero in place, as diffusers does.
    """

    config_class = SafetyCheckerConfig
    weights_name = "model"
    #: the ``model_index.json`` library diffusers files this class under
    model_index_library: ClassVar[str] = "stable_diffusion"

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        settings, dim = self.config.vision_config, self.config.projection_dim
        self.vision_model = CLIPVisionTower(settings)
        self.visual_projection = nn.Linear(settings.hidden_size, dim, bias=False)
        self.concept_embeds = nn.Parameter(torch.ones(CONCEPTS, dim), requires_grad=False)
        self.special_care_embeds = nn.Parameter(torch.ones(SPECIAL_CONCEPTS, dim), requires_grad=False)
        self.concept_embeds_weights = nn.Parameter(torch.ones(CONCEPTS), requires_grad=False)
        self.special_care_embeds_weights = nn.Parameter(torch.ones(SPECIAL_CONCEPTS), requires_grad=False)

    @classmethod
    def convert_state_dict(cls, state: dict[str, torch.Tensor], config: Config) -> dict[str, torch.Tensor]:
        """Accept the transformers-5 layout (``vision_model.embeddings...``) and drop old position-id buffers."""
        converted = {}
        for key, tensor in state.items():
            if key.endswith("embeddings.position_ids"):
                continue
            if key.startswith("vision_model.") and not key.startswith("vision_model.vision_model."):
                key = "vision_model." + key
            converted[key] = tensor
        return converted

    def image_embeds(self, clip_input: torch.Tensor) -> torch.Tensor:
        """CLIP image embeddings: the pooled vision feature through ``visual_projection``."""
        return self.visual_projection(self.vision_model(clip_input))

    @torch.no_grad()
    def forward(self, clip_input: torch.Tensor, images: Any) -> tuple[Any, list[bool]]:
        embeds = self.image_embeds(clip_input)
        special_cos = cosine_similarity(embeds, self.special_care_embeds).cpu().float()
        concept_cos = cosine_similarity(embeds, self.concept_embeds).cpu().float()
        flags = nsfw_flags(special_cos, concept_cos, self.special_care_embeds_weights.detach().cpu().float(),
                           self.concept_embeds_weights.detach().cpu().float()).tolist()
        if any(flags):
            logger.warning(
                "The safety checker flagged %d of %d images as potential NSFW content; they are returned black. "
                "Try another prompt or seed.", sum(flags), len(flags),
            )
        return black_out(images, flags), flags

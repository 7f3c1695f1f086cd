"""``ExampleRescaleProcessor``: images in ``[0, 1]`` <-> model inputs in ``[low, high]``.

With the default ``[-1, 1]`` it computes what diffusers' image processor computes in its
``normalize`` / ``denormalize`` steps, which the tests check number for number.
"""

from __future__ import annotations

from typing import Any, ClassVar, Self

import numpy as np
from pydantic import model_validator

from diffkit.config import Config
from diffkit.processor import Processor


class ExampleRescaleConfig(Config):
    """The typed config: field names and defaults are what ``processor_config.json`` holds."""

    owner_name: ClassVar[str] = "ExampleRescaleProcessor"

    low: float = -1.0
    high: float = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if not self.high > self.low:
            raise ValueError(f"high ({self.high}) must be greater than low ({self.low})")
        return self


class ExampleRescaleProcessor(Processor):
    """Affine map between ``[0, 1]`` and ``[low, high]``; works on torch tensors and numpy arrays."""

    config_class: ClassVar[type[Config]] = ExampleRescaleConfig
    config: ExampleRescaleConfig

    def preprocess(self, data: Any, **kwargs: Any) -> Any:
        """``[0, 1]`` -> ``[low, high]``: ``x·(high - low) + low``."""
        return data * (self.config.high - self.config.low) + self.config.low

    def postprocess(self, data: Any, **kwargs: Any) -> Any:
        """``[low, high]`` -> ``[0, 1]``, clamped: ``(y - low) / (high - low)``."""
        out = (data - self.config.low) / (self.config.high - self.config.low)
        return out.clamp(0, 1) if hasattr(out, "clamp") else np.clip(out, 0, 1)

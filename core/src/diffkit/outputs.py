"""Output containers returned by pipelines and schedulers, and ``numpy_to_pil``.

They behave like diffusers' outputs: attribute access, ``out["images"]``, ``out[0]`` over the
fields that are not ``None``, and ``to_tuple()``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class BaseOutput:
    """Mixin for output dataclasses: index by name or by position over non-``None`` fields."""

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v for v in (getattr(self, f.name) for f in dataclasses.fields(self)) if v is not None)  # type: ignore[arg-type]

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclasses.dataclass
class ImagePipelineOutput(BaseOutput):
    """``images``: a list of PIL images, an NHWC numpy array, or an NCHW tensor."""

    images: Any


@dataclasses.dataclass
class AudioPipelineOutput(BaseOutput):
    """``audios``: a numpy array ``(batch, channels, samples)``."""

    audios: Any


@dataclasses.dataclass
class SchedulerOutput(BaseOutput):
    """Result of one scheduler step."""

    prev_sample: Any
    pred_original_sample: Any = None


def numpy_to_pil(images: np.ndarray) -> list[Image.Image]:
    """Convert float images in [0, 1] (``HWC`` or ``NHWC``) to PIL images, as diffusers does."""
    import numpy as np
    from PIL import Image

    if images.ndim == 3:
        images = images[None, ...]
    pixels = (images * 255).round().astype(np.uint8)
    if pixels.shape[-1] == 1:
        return [Image.fromarray(p.squeeze(-1), mode="L") for p in pixels]
    return [Image.fromarray(p) for p in pixels]

"""Output containers returned by pipelines and schedulers, and ``numpy_to_pil``.

They behave like diffusers' outputs: attribute access, ``out["images"]``, ``out[0]`` over the
fields that are not ``None``, ``keys()``/``values()``/``items()`` and ``to_tuple()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class BaseOutput(Mapping):
    """Mixin for output dataclasses: a read-only mapping of the fields that are not ``None``.

    As in diffusers: ``out.images``, ``out["images"]``, ``out[0]`` (by position over those
    fields), ``keys()``/``values()``/``items()``, ``"images" in out``, ``dict(out)`` and
    ``to_tuple()``.
    """

    def _present(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]  # type: ignore[arg-type]

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._present())

    def __getitem__(self, key: str | int | slice) -> Any:
        if isinstance(key, str):
            if key not in self._present():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())


#: diffusers' other spellings of ``output_type`` values
OUTPUT_TYPE_ALIASES: dict[str, str] = {"numpy": "np"}


def output_type_of(output_type: Any, allowed: Sequence[str], note: str = "") -> str:
    """``output_type`` checked against ``allowed``, with diffusers' aliases (``"numpy"``) resolved."""
    name = OUTPUT_TYPE_ALIASES.get(output_type, output_type) if isinstance(output_type, str) else output_type
    if name not in allowed:
        raise ValueError(f"output_type={output_type!r} is not one of {', '.join(allowed)}{note}")
    return name


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

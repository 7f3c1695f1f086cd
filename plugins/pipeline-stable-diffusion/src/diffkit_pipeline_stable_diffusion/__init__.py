"""diffkit plugin: the Stable Diffusion pipeline family.

``base`` holds what every task of the family shares (prompt encoding, classifier-free
guidance, latent preparation, decoding and the safety check); one module per task builds on
it (``text_to_image``). Public classes are imported lazily, so importing this package (as
plugin discovery does through ``hooks``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "StableDiffusionPipeline": "text_to_image",
    "StableDiffusionPipelineOutput": "outputs",
    "StableDiffusionBase": "base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""``OffloadStrategy``: where a pipeline's weights live between uses.

A strategy is applied to a pipeline with an execution device; it installs whatever hooks it
needs on the pipeline's modules, and can be removed again. ``free()`` is called after every
pipeline call (``maybe_free_model_hooks``) to return everything to its resting place.
"""

from __future__ import annotations

from typing import Any, ClassVar


class OffloadStrategy:
    """Base class of offload strategies (``model``, ``sequential``, ...)."""

    name: ClassVar[str] = ""

    def apply(self, pipeline: Any, device: Any) -> None:
        raise NotImplementedError

    def free(self, pipeline: Any) -> None:
        """Return every component to the offload device and re-arm the hooks."""

    def remove(self, pipeline: Any) -> None:
        raise NotImplementedError

    @property
    def execution_device(self) -> Any:
        raise NotImplementedError

"""``Processor``: converts between user-facing data (PIL, numpy) and model tensors.

Processors are configurable like models and schedulers; they may be saved as a component of
a pipeline (``<name>/<config_name>``) or used internally by a pipeline.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .config import Config, Configurable


class Processor(Configurable):
    """Base class of pre/post-processors: ``preprocess`` (user → tensor) and ``postprocess``."""

    config_class: ClassVar[type[Config]] = Config
    config_name: ClassVar[str] = "processor_config.json"

    def __init__(self, config: Config | dict[str, Any] | None = None, **kwargs: Any) -> None:
        self._init_config(config, kwargs)

    def preprocess(self, data: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no preprocess step")

    def postprocess(self, data: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} has no postprocess step")

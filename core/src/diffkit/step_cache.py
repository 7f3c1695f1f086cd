"""``StepCache``: work reused between the denoising steps of one pipeline call (DeepCache, ...).

A cache is registered by name (``register_step_caches``) and enabled on a pipeline with
``pipe.enable_step_cache(name, **options)``. Enabling installs the cache's wrappers on the
pipeline's models once; the wrappers hold no per-call data. What a call reuses lives in a
per-call state object that :func:`call_scope` creates when a pipeline call starts and drops
when it ends, in a :class:`contextvars.ContextVar`: each thread (and each asyncio task) sees
only its own call's state, so concurrent calls on one pipeline never share cached tensors.
A model called outside a pipeline call finds no state and runs uncached.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, ClassVar

#: the caches active in the current pipeline call: cache object -> its per-call state
_CALL_STATES: contextvars.ContextVar[dict[int, Any] | None] = contextvars.ContextVar(
    "diffkit_step_cache_states", default=None
)


class StepCache:
    """Base class of step caches.

    ``apply`` installs the cache on a pipeline's models (stateless wrappers that read
    :func:`call_state`); ``remove`` restores them exactly; ``new_state`` builds the empty
    state of one call. An instance serves one pipeline.
    """

    name: ClassVar[str] = ""

    def apply(self, pipeline: Any) -> None:
        """Install the cache on ``pipeline``'s models; raise ``TypeError``/``ValueError`` if it cannot serve them."""
        raise NotImplementedError

    def remove(self, pipeline: Any) -> None:
        """Undo :meth:`apply`: the models behave and look as before."""
        raise NotImplementedError

    def new_state(self) -> Any:
        """The empty state of one pipeline call."""
        raise NotImplementedError

    def options(self) -> dict[str, Any]:
        """The options this instance was built with."""
        return {}

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


@contextlib.contextmanager
def call_scope(cache: StepCache | None) -> Iterator[None]:
    """Give ``cache`` a fresh state for the duration of one pipeline call (nothing when ``None``)."""
    if cache is None:
        yield
        return
    outer = _CALL_STATES.get()
    token = _CALL_STATES.set({**(outer or {}), id(cache): cache.new_state()})
    try:
        yield
    finally:
        _CALL_STATES.reset(token)


def call_state(cache: StepCache) -> Any | None:
    """``cache``'s state in the pipeline call running in this context; ``None`` outside one."""
    states = _CALL_STATES.get()
    return None if states is None else states.get(id(cache))


def resolve_step_cache(cache: str | StepCache, **options: Any) -> StepCache:
    """An instance for a registered name (built with ``options``) or the instance given."""
    if isinstance(cache, StepCache):
        if options:
            raise TypeError("options are only accepted with a step cache name, not with a StepCache instance")
        return cache
    from ._registry import registry

    return registry.get("step_cache", cache)(**options)

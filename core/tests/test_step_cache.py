"""The step-cache protocol: per-call state scoped by every pipeline call, enable/disable, re-apply on swap."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from toy_components import ToyModel, ToyPipeline, ToyScheduler  # noqa: E402

from diffkit import StepCache  # noqa: E402
from diffkit.step_cache import call_scope, call_state  # noqa: E402


class CountingCache(StepCache):
    """Records which model it is applied to and, per call, how often the model ran."""

    name = "counting"

    def __init__(self) -> None:
        self.applied: list[Any] = []
        self.seen: list[int] = []

    def new_state(self) -> dict[str, int]:
        return {"runs": 0}

    def apply(self, pipeline: Any) -> None:
        self.applied.append(pipeline.model)
        self._hook = pipeline.model.register_forward_pre_hook(self._count)

    def remove(self, pipeline: Any) -> None:
        self.applied.remove(pipeline.model)
        self._hook.remove()

    def _count(self, module: Any, args: Any) -> None:
        state = call_state(self)
        if state is not None:
            state["runs"] += 1
            self.seen.append(state["runs"])


def make_pipe() -> ToyPipeline:
    torch.manual_seed(0)
    return ToyPipeline(model=ToyModel(), scheduler=ToyScheduler())


def test_state_exists_only_inside_a_call_and_is_fresh_for_each():
    pipe, cache = make_pipe(), CountingCache()
    assert pipe.enable_step_cache(cache) is cache and pipe.step_cache is cache
    x = torch.randn(2, 4)
    pipe(x)
    pipe(x)
    assert cache.seen == [1, 2, 3, 1, 2, 3]  # three model runs per call, counted from 1 each call
    pipe.model(x)  # outside a pipeline call: no state
    assert cache.seen == [1, 2, 3, 1, 2, 3]
    assert call_state(cache) is None


def test_nested_scopes_keep_the_outer_caches_and_restore_them():
    outer, inner = CountingCache(), CountingCache()
    with call_scope(outer):
        state = call_state(outer)
        with call_scope(inner):
            assert call_state(outer) is state and call_state(inner) is not None
        assert call_state(inner) is None and call_state(outer) is state
    with call_scope(None):
        assert call_state(outer) is None


def test_threads_never_see_each_others_state():
    cache = CountingCache()
    seen: dict[str, Any] = {}
    ready, done = threading.Event(), threading.Event()

    def other():
        seen["other before"] = call_state(cache)
        with call_scope(cache):
            seen["other"] = call_state(cache)
            ready.set()
            done.wait(5)

    with call_scope(cache):
        mine = call_state(cache)
        thread = threading.Thread(target=other)
        thread.start()
        ready.wait(5)
        assert seen["other before"] is None and seen["other"] is not mine
        done.set()
        thread.join()


def test_disable_removes_and_a_swapped_model_gets_the_cache():
    pipe, cache = make_pipe(), CountingCache()
    pipe.enable_step_cache(cache)
    old, new = pipe.model, ToyModel()
    pipe.model = new
    assert cache.applied == [new] and not old._forward_pre_hooks
    pipe.disable_step_cache()
    assert cache.applied == [] and pipe.step_cache is None and not new._forward_pre_hooks
    pipe.disable_step_cache()  # nothing on: nothing happens


def test_a_cache_that_refuses_the_new_model_turns_itself_off():
    class Picky(CountingCache):
        def apply(self, pipeline: Any) -> None:
            if pipeline.model.config.features != 4:
                raise ValueError("only 4 features")
            super().apply(pipeline)

    pipe, cache = make_pipe(), Picky()
    pipe.enable_step_cache(cache)
    with pytest.raises(ValueError, match="only 4 features"):
        pipe.model = ToyModel(features=3)
    assert pipe.step_cache is None and pipe.model.config.features == 3


def test_an_instance_takes_no_options_and_an_unknown_name_is_named(diffkit_registry):
    from diffkit.errors import ComponentNotFoundError

    pipe = make_pipe()
    with pytest.raises(TypeError, match="options are only accepted"):
        pipe.enable_step_cache(CountingCache(), interval=2)
    with pytest.raises(ComponentNotFoundError, match="nope"):
        pipe.enable_step_cache("nope")

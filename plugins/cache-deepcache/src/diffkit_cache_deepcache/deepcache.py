"""``DeepCache``: reuse a UNet's deep features between denoising steps (Ma et al., 2023).

Neighbouring steps of a sampler change the UNet's deep, low-resolution features little. Every
``interval``-th UNet call of a pipeline call runs in full and keeps the output of the up block
just below the shallow branch; the calls in between run only the shallow branch: the input
convolution, the first ``branch`` down blocks, the last ``branch`` up blocks (fed the cached
deep feature and the fresh skip connections) and the output layers.

The deeper blocks get a stateless stand-in ``forward`` at :meth:`DeepCache.apply`; what they
return on a skipped call comes from the per-call state that :func:`diffkit.step_cache.call_state`
hands out, so one pipeline serves concurrent calls, and the UNet called outside a pipeline
call runs uncached.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from diffkit.step_cache import StepCache, call_state


@dataclass
class DeepCacheState:
    """What one pipeline call reuses.

    ``full``: whether the UNet call in progress runs in full (``None`` before the first one);
    ``calls``: UNet calls so far; ``full_calls``: how many of them ran in full; ``signature``:
    the sample's shape, dtype and device at the last full call; ``outputs``: per skipped
    block, what it returns on a partial call.
    """

    full: bool | None = None
    calls: int = 0
    full_calls: int = 0
    signature: tuple[Any, ...] | None = None
    outputs: dict[int, Any] = field(default_factory=dict)


@dataclass
class _Installed:
    """What :meth:`DeepCache.apply` changed on one UNet, to undo it exactly."""

    unet: nn.Module
    hook: Any
    blocks: list[tuple[nn.Module, Any]]  # (block, its own instance ``forward`` before, or None)


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"DeepCache {name}={value!r}: must be a whole number >= 1")
    return value


def _placeholders(output: Any) -> Any:
    """``output`` with every tensor replaced by a 0-d zero: keeps the structure the UNet unpacks."""
    if isinstance(output, torch.Tensor):
        return output.new_zeros(())
    if isinstance(output, (tuple, list)):
        return type(output)(_placeholders(item) for item in output)
    return output


class DeepCache(StepCache):
    """DeepCache for ``UNet2DConditionModel`` (the pipeline's ``unet``).

    ``interval``: UNet calls per full call (1 = every call is full, i.e. no caching; a
    second-order scheduler calls the UNet twice per step). ``branch``: how many of the
    outermost down/up block pairs form the shallow branch that partial calls recompute
    (1 = cheapest; at most the number of up blocks minus one).
    """

    name = "deepcache"

    def __init__(self, interval: int = 3, branch: int = 1, component: str = "unet") -> None:
        self.interval = _positive_int(interval, "interval")
        self.branch = _positive_int(branch, "branch")
        self.component = component
        self._installed: _Installed | None = None
        self._lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        return {"interval": self.interval, "branch": self.branch, "component": self.component}

    def new_state(self) -> DeepCacheState:
        return DeepCacheState()

    # -- install / remove ---------------------------------------------------------------
    def apply(self, pipeline: Any) -> None:
        unet = getattr(pipeline, self.component, None)
        where = f"{type(pipeline).__name__}.{self.component}"
        blocks = self._skipped_blocks(unet, where)
        with self._lock:
            if self._installed is not None:
                raise RuntimeError("this DeepCache is already applied to a pipeline; build one per pipeline")
            hook = unet.register_forward_pre_hook(self._start_unet_call, with_kwargs=True)
            installed = _Installed(unet, hook, [])
            deep = blocks[-1][0]  # the up block whose output the shallow branch starts from
            for key, (block, _) in enumerate(blocks):
                installed.blocks.append((block, block.__dict__.get("forward")))
                block.forward = self._stand_in(block.forward, key, keep=block is deep)
            unet._diffkit_step_cache = self
            self._installed = installed

    def remove(self, pipeline: Any) -> None:
        with self._lock:
            installed, self._installed = self._installed, None
        if installed is None:
            return
        installed.hook.remove()
        for block, before in installed.blocks:
            if before is None:
                del block.forward
            else:
                block.forward = before
        del installed.unet._diffkit_step_cache

    def _skipped_blocks(self, unet: Any, where: str) -> list[tuple[nn.Module, str]]:
        """The blocks a partial call skips, ``(block, name)``, ending with the deep-feature up block."""
        if not all(isinstance(getattr(unet, a, None), nn.ModuleList) for a in ("down_blocks", "up_blocks")):
            raise TypeError(
                f"DeepCache needs a UNet with down_blocks and up_blocks (a UNet2DConditionModel) as {where}, "
                f"got {type(unet).__name__}"
            )
        if getattr(unet, "_diffkit_step_cache", None) is not None:
            raise RuntimeError(
                f"{where} already carries a step cache (shared with another pipeline?); "
                "disable_step_cache() there first"
            )
        if getattr(unet, "_compiled_call_impl", None) is not None:
            raise RuntimeError(
                f"{where} is compiled as one graph, which DeepCache cannot skip blocks of; "
                "compile it regionally instead (unet.compile(), the default) or enable the cache before compiling"
            )
        up = len(unet.up_blocks)
        if self.branch > up - 1 or self.branch > len(unet.down_blocks):
            raise ValueError(
                f"DeepCache branch={self.branch}: {where} has {up} up blocks, so branch must be between 1 and "
                f"{min(up - 1, len(unet.down_blocks))}"
            )
        skipped = [(b, f"down_blocks.{i}") for i, b in enumerate(unet.down_blocks) if i >= self.branch]
        if getattr(unet, "mid_block", None) is not None:
            skipped.append((unet.mid_block, "mid_block"))
        skipped += [(b, f"up_blocks.{i}") for i, b in enumerate(unet.up_blocks) if i < up - self.branch]
        return skipped

    # -- what runs ------------------------------------------------------------------------
    def _start_unet_call(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Decide whether this UNet call runs in full: every ``interval``-th call, and whenever the input changed."""
        state = call_state(self)
        if state is None:
            return
        sample = args[0] if args else kwargs["sample"]
        signature = (tuple(sample.shape), sample.dtype, sample.device)
        state.full = state.calls % self.interval == 0 or signature != state.signature
        state.calls += 1
        if state.full:
            state.signature = signature
            state.full_calls += 1

    def _stand_in(self, original: Callable[..., Any], key: int, keep: bool) -> Callable[..., Any]:
        """A ``forward`` that runs ``original`` on full calls (recording what partial calls return) and
        returns the recording on partial ones: the real output for the deep-feature block (``keep``),
        placeholders of the right structure for the blocks below it, whose outputs nothing reads then.
        """

        def forward(*args: Any, **kwargs: Any) -> Any:
            state = call_state(self)
            if state is None or state.full is None:
                return original(*args, **kwargs)
            if state.full:
                out = original(*args, **kwargs)
                state.outputs[key] = out if keep else _placeholders(out)
                return out
            return state.outputs[key]

        return forward

"""``ModelOffload`` ("model"): whole components move to the execution device while they run."""

from __future__ import annotations

import functools
import threading
from collections import Counter
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from diffkit.offload import Moved, OffloadStrategy, move_to_device, offload, onload


class ModelOffload(OffloadStrategy):
    """Each component moves to the execution device when it runs; the previous one goes back.

    The components named in the pipeline's ``model_cpu_offload_seq`` form a chain: when one
    of them starts, the chain member on the device returns to the CPU, so at most one of them
    occupies the device (diffusers offloads only the declared predecessor; this also covers
    components called out of order). Other module components get their own hook and stay on
    the device until :meth:`free`; those in the pipeline's ``_exclude_from_cpu_offload`` live
    on the device for as long as the strategy is applied.

    Hooks sit on every component and on its direct children, so a call that does not go
    through ``forward`` (``pipe.vae.decode(latents)``) onloads the component too, and tensors
    passed in are moved to the execution device; outputs stay there. Moves are serialised by
    a lock, and a component still running in another thread is offloaded when its call ends.
    """

    name = "model"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._device: torch.device | None = None
        self._offload_device = torch.device("cpu")
        self._modules: dict[str, torch.nn.Module] = {}
        self._chain: frozenset[str] = frozenset()
        self._pinned: dict[str, list[Moved]] = {}
        self._moved: dict[str, list[Moved]] = {}
        self._busy: Counter[str] = Counter()
        self._pending: set[str] = set()
        self._active: str | None = None
        self._handles: list[RemovableHandle] = []

    # -- OffloadStrategy ---------------------------------------------------------------
    @property
    def execution_device(self) -> torch.device:
        if self._device is None:
            raise RuntimeError("this ModelOffload is not applied to a pipeline")
        return self._device

    @property
    def onloaded(self) -> tuple[str, ...]:
        """Components on the execution device now, by pipeline name (pinned ones excluded)."""
        with self._lock:
            return tuple(name for name in self._modules if name in self._moved)

    def apply(self, pipeline: Any, device: torch.device) -> None:
        """Move the module components to the CPU and hook them, chained in declared order."""
        order = [name.strip() for name in (pipeline.model_cpu_offload_seq or "").split("->") if name.strip()]
        if not order:
            raise ValueError(
                f"{type(pipeline).__name__} declares no model_cpu_offload_seq, so model offloading does not know "
                "the order of its components; use enable_sequential_cpu_offload() instead"
            )
        components = pipeline.components
        unknown = [name for name in order if name not in components]
        if unknown:
            raise ValueError(
                f"{type(pipeline).__name__}.model_cpu_offload_seq names {unknown}, which are not among its "
                f"components {sorted(components)}"
            )
        excluded = set(getattr(pipeline, "_exclude_from_cpu_offload", ()))
        modules = {n: c for n, c in components.items() if isinstance(c, torch.nn.Module)}
        with self._lock:
            if self._device is not None:
                raise RuntimeError("this ModelOffload is already applied to a pipeline; remove() it first")
            self._device = torch.device(device)
            self._chain = frozenset(n for n in order if n in modules and n not in excluded)
            for name, module in modules.items():
                if name in excluded:
                    module.to(self._offload_device)
                    self._pinned[name] = onload(module.modules(), self._device)
                    self._handles.append(module.register_forward_pre_hook(self._move_inputs, with_kwargs=True))
                    continue
                module.to(self._offload_device)
                self._modules[name] = module
                for target in (module, *module.children()):
                    self._handles.append(
                        target.register_forward_pre_hook(functools.partial(self._before, name), with_kwargs=True)
                    )
                    self._handles.append(
                        target.register_forward_hook(functools.partial(self._after, name), always_call=True)
                    )

    def free(self, pipeline: Any = None) -> None:
        """Send every component back to the CPU (those still running: when they finish)."""
        with self._lock:
            for name in list(self._moved):
                self._release(name)
            self._active = None

    def remove(self, pipeline: Any = None) -> None:
        """Remove every hook and leave every component on the CPU."""
        with self._lock:
            for handle in self._handles:
                handle.remove()
            for name in list(self._moved):
                offload(self._moved.pop(name))
            for pinned in self._pinned.values():
                offload(pinned)
            self._handles.clear()
            self._modules.clear()
            self._pinned.clear()
            self._busy.clear()
            self._pending.clear()
            self._active = None
            self._device = None

    # -- hooks -------------------------------------------------------------------------
    def _move_inputs(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = self._device
        if device is None:
            return None
        return move_to_device(args, device), move_to_device(kwargs, device)

    def _before(self, name: str, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            device = self._device
            if device is None:  # removed while a call was starting
                return None
            self._busy[name] += 1
            try:
                if name in self._chain and self._active != name:
                    previous, self._active = self._active, name
                    if previous is not None:
                        self._release(previous)
                if name not in self._moved:
                    self._moved[name] = onload(self._modules[name].modules(), device)
            except BaseException:
                self._busy[name] -= 1
                raise
        return move_to_device(args, device), move_to_device(kwargs, device)

    def _after(self, name: str, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        with self._lock:
            if self._busy[name] > 0:
                self._busy[name] -= 1
            if not self._busy[name] and name in self._pending:
                self._pending.discard(name)
                self._offload_now(name)

    def _release(self, name: str) -> None:
        if self._busy[name]:
            self._pending.add(name)
        else:
            self._offload_now(name)

    def _offload_now(self, name: str) -> None:
        moved = self._moved.pop(name, None)
        if moved is not None:
            offload(moved)

"""``SequentialOffload`` ("sequential"): weights stream to the execution device one module at a time."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import torch
from torch.utils.hooks import RemovableHandle

from diffkit.offload import Moved, OffloadStrategy, has_own_tensors, move_to_device, offload, onload


class SequentialOffload(OffloadStrategy):
    """Each module's own parameters and buffers are on the execution device only during its forward.

    Every sub-module that holds tensors itself (in practice the leaves: linears, convs,
    norms) gets a pre-hook that puts them on the execution device and a post-hook that puts
    the resting CPU tensors back, so the device holds one layer's weights at a time: the
    lowest memory, at the price of a host-to-device copy per layer per call. Weights stay
    real CPU tensors in the modules (``state_dict()`` and ``save_pretrained`` work while
    offloading). Tensors passed into any hooked module, the component itself included, are
    moved to the execution device. Code that uses a module's weights without calling that
    module (``F.linear(x, self.proj.weight)``) sees the CPU tensors.

    Components in the pipeline's ``_exclude_from_cpu_offload`` live on the execution device
    while the strategy is applied. Moves are serialised by a lock and counted per module, so
    concurrent calls share an onloaded module and the last one to finish offloads it.
    """

    name = "sequential"

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._device: torch.device | None = None
        self._offload_device = torch.device("cpu")
        self._names: dict[torch.nn.Module, str] = {}
        self._holders: set[torch.nn.Module] = set()
        self._pinned: dict[str, list[Moved]] = {}
        self._moved: dict[torch.nn.Module, list[Moved]] = {}
        self._busy: Counter[torch.nn.Module] = Counter()
        self._handles: list[RemovableHandle] = []

    # -- OffloadStrategy ---------------------------------------------------------------
    @property
    def execution_device(self) -> torch.device:
        if self._device is None:
            raise RuntimeError("this SequentialOffload is not applied to a pipeline")
        return self._device

    @property
    def onloaded(self) -> tuple[str, ...]:
        """Dotted names (``"unet.conv_in"``) of the modules whose tensors are on the execution device now."""
        with self._lock:
            return tuple(self._names[module] for module in self._moved)

    def apply(self, pipeline: Any, device: torch.device) -> None:
        """Move every module component to the CPU and hook each module that holds tensors."""
        excluded = set(getattr(pipeline, "_exclude_from_cpu_offload", ()))
        modules = {n: c for n, c in pipeline.components.items() if isinstance(c, torch.nn.Module)}
        with self._lock:
            if self._device is not None:
                raise RuntimeError("this SequentialOffload is already applied to a pipeline; remove() it first")
            self._device = torch.device(device)
            for name, component in modules.items():
                if name in excluded:
                    component.to(self._offload_device)
                    self._pinned[name] = onload(component.modules(), self._device)
                    self._handles.append(component.register_forward_pre_hook(self._move_inputs, with_kwargs=True))
                    continue
                component.to(self._offload_device)
                for path, module in component.named_modules(prefix=name):
                    if module is not component and not has_own_tensors(module):
                        continue
                    self._names[module] = path
                    if has_own_tensors(module):
                        self._holders.add(module)
                    self._handles.append(module.register_forward_pre_hook(self._before, with_kwargs=True))
                    self._handles.append(module.register_forward_hook(self._after, always_call=True))

    def free(self, pipeline: Any = None) -> None:
        """Offload whatever a failed or interrupted call left on the device (normally nothing)."""
        with self._lock:
            for module in [m for m in self._moved if not self._busy[m]]:
                offload(self._moved.pop(module))

    def remove(self, pipeline: Any = None) -> None:
        """Remove every hook and leave every weight on the CPU."""
        with self._lock:
            for handle in self._handles:
                handle.remove()
            for moved in self._moved.values():
                offload(moved)
            for pinned in self._pinned.values():
                offload(pinned)
            self._handles.clear()
            self._moved.clear()
            self._names.clear()
            self._holders.clear()
            self._pinned.clear()
            self._busy.clear()
            self._device = None

    # -- hooks -------------------------------------------------------------------------
    def _move_inputs(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        device = self._device
        if device is None:
            return None
        return move_to_device(args, device), move_to_device(kwargs, device)

    def _before(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with self._lock:
            device = self._device
            if device is None:
                return None
            self._busy[module] += 1
            if module in self._holders and module not in self._moved:
                try:
                    self._moved[module] = onload((module,), device)
                except BaseException:
                    self._busy[module] -= 1
                    raise
        return move_to_device(args, device), move_to_device(kwargs, device)

    def _after(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        with self._lock:
            if self._busy[module] > 0:
                self._busy[module] -= 1
            if not self._busy[module] and module in self._moved:
                offload(self._moved.pop(module))

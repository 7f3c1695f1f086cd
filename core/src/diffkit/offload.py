"""``OffloadStrategy``: where a pipeline's weights live between uses.

A strategy is applied to a pipeline with an execution device; it installs whatever hooks it
needs on the pipeline's modules, and can be removed again. ``free()`` is called after every
pipeline call (``maybe_free_model_hooks``) to return everything to its resting place.

The helpers below are shared by the strategies. Weights rest on the offload device (the CPU);
"onloading" a module puts a copy of each of its tensors on the execution device in the
module's slot and keeps the resting tensor aside; "offloading" puts the resting tensor back.
No copy is made on the way back unless the onloaded tensor was changed in place (its version
counter moved), so returning a module to the CPU costs nothing in the common case, and a
fake execution device such as ``meta`` exercises every move without touching the weights.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

#: one moved tensor: (owning module, slot dict name, key, resting tensor, onloaded tensor,
#: onloaded tensor's version, data pointer and dtype right after the move)
Moved = tuple[Any, str, str, Any, Any, int, int, Any]

_SLOTS = ("_parameters", "_buffers")


class OffloadStrategy:
    """Base class of offload strategies (``model``, ``sequential``, ...).

    A strategy instance serves one pipeline at a time. Strategies hold per-pipeline state
    (which modules are on the execution device) and serialise their moves with a lock.
    """

    name: ClassVar[str] = ""

    def apply(self, pipeline: Any, device: torch.device) -> None:
        """Install hooks on ``pipeline``'s modules; ``device`` is where forwards run."""
        raise NotImplementedError

    def free(self, pipeline: Any) -> None:
        """Return every component to the offload device and re-arm the hooks."""

    def remove(self, pipeline: Any) -> None:
        """Return everything to the offload device and remove every hook."""
        raise NotImplementedError

    @property
    def execution_device(self) -> torch.device:
        """Where the hooked modules run (and where a pipeline creates its tensors)."""
        raise NotImplementedError

    @property
    def onloaded(self) -> tuple[str, ...]:
        """Names of what is on the execution device right now (empty after ``free``)."""
        return ()

    def __repr__(self) -> str:
        try:
            where = f"execution_device={str(self.execution_device)!r}"
        except (NotImplementedError, RuntimeError):
            where = "not applied"
        return f"{type(self).__name__}({where})"


def resolve_execution_device(device: Any = None, gpu_id: int | None = None) -> torch.device:
    """The execution device for offloading, checked to exist.

    ``None`` means the current accelerator. ``gpu_id`` gives the index of a device named
    without one (``device="cuda", gpu_id=1`` is ``cuda:1``). ``cpu`` (and ``meta``) are
    accepted: the hooks then run without saving memory, which is how the tests check them.
    Raises ``RuntimeError`` naming the device when it is not usable here.
    """
    import torch

    if device is None:
        accelerator = getattr(torch, "accelerator", None)
        found = accelerator.current_accelerator() if accelerator is not None and accelerator.is_available() else None
        if found is None and torch.cuda.is_available():
            found = torch.device("cuda")
        if found is None:
            raise RuntimeError(
                "offloading needs an execution device and this machine has no accelerator; pass device='cpu' "
                "to run the offload hooks on the CPU (this saves no memory)"
            )
        device = found
    dev = torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    if gpu_id is not None:
        if dev.index is not None:
            raise ValueError(f"pass either gpu_id={gpu_id} or a device with an index ({dev}), not both")
        dev = torch.device(dev.type, gpu_id)
    if dev.type in ("cpu", "meta"):
        return torch.device(dev.type)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"cannot offload to {dev}: CUDA is not available here (torch {torch.__version__}, "
                "torch.cuda.is_available() is False); pass device='cpu' to run the hooks on the CPU"
            )
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"cannot offload to {dev}: only {torch.cuda.device_count()} CUDA device(s) exist")
        return torch.device("cuda", index)
    try:
        torch.empty(0, device=dev)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RuntimeError(f"cannot offload to {dev}: {reason}") from None
    return dev


def move_to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor inside (tuples, lists, dicts, nested) moved to ``device``."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        moved = tuple(move_to_device(v, device) for v in value)
        return type(value)(*moved) if hasattr(value, "_fields") else moved
    if isinstance(value, list):
        return [move_to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: move_to_device(v, device) for k, v in value.items()}
    return value


def onload(modules: Iterable[torch.nn.Module], device: torch.device) -> list[Moved]:
    """Put each module's own parameters and buffers on ``device``; returns what :func:`offload` undoes.

    Only the tensors held directly by each module in ``modules`` move (pass
    ``module.modules()`` for a whole tree). Tensors already on ``device`` stay as they are;
    a tensor shared by several modules gets one copy.
    """
    import torch

    moved: list[Moved] = []
    copies: dict[int, torch.Tensor] = {}
    with torch.inference_mode(False), torch.no_grad():
        for module in modules:
            for slot in _SLOTS:
                tensors = getattr(module, slot)
                for key, rest in tensors.items():
                    if rest is None or rest.device == device:
                        continue
                    copy = copies.get(id(rest))
                    if copy is None:
                        data = rest.detach().to(device)
                        copy = torch.nn.Parameter(data, requires_grad=rest.requires_grad) if isinstance(
                            rest, torch.nn.Parameter) else data
                        copies[id(rest)] = copy
                    tensors[key] = copy
                    moved.append((module, slot, key, rest, copy, copy._version, copy.data_ptr(), copy.dtype))
    return moved


def offload(moved: list[Moved]) -> None:
    """Undo :func:`onload`: put the resting tensors back.

    A tensor changed in place while onloaded is copied back into its resting tensor; one
    replaced or converted (``module.to(dtype)``) is moved to the resting device as it is now.
    """
    import torch

    with torch.inference_mode(False), torch.no_grad():
        for module, slot, key, rest, copy, version, pointer, dtype in moved:
            tensors = getattr(module, slot)
            current = tensors.get(key)
            if current is rest or current is None:
                continue
            if current is copy and copy._version == version and copy.data_ptr() == pointer and copy.dtype == dtype:
                tensors[key] = rest
            elif current.shape == rest.shape and current.dtype == rest.dtype and not rest.is_inference():
                rest.copy_(current.detach())
                tensors[key] = rest
            else:
                data = current.detach().to(rest.device)
                tensors[key] = torch.nn.Parameter(data, requires_grad=current.requires_grad) if isinstance(
                    current, torch.nn.Parameter) else data


def has_own_tensors(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds parameters or buffers itself (not only through children)."""
    return any(t is not None for slot in _SLOTS for t in getattr(module, slot).values())

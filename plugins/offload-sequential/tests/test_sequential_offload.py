"""SequentialOffload on a toy pipeline whose model nests modules and holds its own parameter.

``meta`` serves as a second device: a weight not streamed to it raises a device mismatch in
the forward, so a completed forward on ``meta`` proves that every module's tensors moved.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from diffkit.config import Config
from diffkit.model import Model
from diffkit.pipeline import Pipeline
from diffkit_offload_sequential.sequential_offload import SequentialOffload

META = torch.device("meta")


class NetConfig(Config):
    owner_name = "Net"
    features: int = 6


class Net(Model):
    """Nested blocks, a buffer, and a parameter of its own used directly in ``forward``."""

    config_class = NetConfig

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        n = self.config.features
        self.blocks = torch.nn.ModuleList(
            [torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.SiLU(), torch.nn.LayerNorm(n)) for _ in range(2)]
        )
        self.gain = torch.nn.Parameter(torch.linspace(0.5, 1.5, n))
        self.register_buffer("offset", torch.linspace(-1, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block(x)
        return x * self.gain + self.offset


class TwoNets(Pipeline):
    model_cpu_offload_seq = "first->second"

    def __init__(self, first: Any, second: Any) -> None:
        super().__init__(first=first, second=second)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.second(self.first(x.to(self._execution_device)))
        self.maybe_free_model_hooks()
        return out


def make_pipe() -> TwoNets:
    torch.manual_seed(0)
    return TwoNets(first=Net(), second=Net())


def all_tensors(pipe: Pipeline) -> dict[str, torch.Tensor]:
    found: dict[str, torch.Tensor] = {}
    for name, module in pipe._modules():
        found.update({f"{name}.{k}": t for k, t in module.named_parameters()})
        found.update({f"{name}.{k}": t for k, t in module.named_buffers()})
    return found


def test_each_module_has_its_own_tensors_on_the_device_only_during_its_forward():
    pipe = make_pipe()
    strategy = pipe.enable_offload(SequentialOffload(), device=META)
    linears = {name: m for name, m in pipe.first.named_modules() if isinstance(m, torch.nn.Linear)}
    seen: list[tuple[str, str, tuple[str, ...]]] = []
    for name, linear in linears.items():
        def record(module, args, name=name):
            others = [m.weight.device.type for n, m in linears.items() if n != name]
            assert all(d == "cpu" for d in others), "another layer's weights are still on the device"
            seen.append((name, module.weight.device.type, strategy.onloaded))

        linear.register_forward_pre_hook(record)
    out = pipe(torch.randn(3, 6))  # CPU input; any tensor not streamed to meta would raise
    assert out.device == META
    assert seen == [
        ("blocks.0.0", "meta", ("first", "first.blocks.0.0")),  # "first" holds `gain` and `offset`
        ("blocks.1.0", "meta", ("first", "first.blocks.1.0")),
    ]
    assert strategy.onloaded == ()


def test_weights_stay_real_cpu_tensors_and_come_back_unchanged():
    pipe = make_pipe()
    before = {k: (t, t.clone()) for k, t in all_tensors(pipe).items()}
    pipe.enable_offload(SequentialOffload(), device=META)
    pipe(torch.randn(2, 6))
    pipe(torch.randn(2, 6))
    for key, tensor in all_tensors(pipe).items():
        original, values = before[key]
        assert tensor is original and torch.equal(tensor, values), key
    state = pipe.first.state_dict()  # saving works while offloading
    assert all(t.device.type == "cpu" for t in state.values())


def test_outputs_equal_the_plain_run_exactly():
    pipe = make_pipe()
    x = torch.randn(5, 6)
    expected = pipe(x)
    pipe.enable_offload(SequentialOffload(), device="cpu")
    assert torch.equal(pipe(x), expected)
    assert torch.equal(pipe(x), expected)


def test_a_failing_forward_leaves_nothing_on_the_device():
    pipe = make_pipe()
    strategy = pipe.enable_offload(SequentialOffload(), device=META)
    with pytest.raises(RuntimeError), torch.inference_mode():
        pipe.first(torch.randn(2, 4))
    assert strategy.onloaded == ()
    assert all(t.device.type == "cpu" for t in all_tensors(pipe).values())


def test_concurrent_calls_give_the_same_outputs():
    pipe = make_pipe()
    inputs = [torch.randn(4, 6, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    expected = [pipe(x) for x in inputs]
    strategy = pipe.enable_offload(SequentialOffload(), device="cpu")
    results: dict[int, list[torch.Tensor]] = {}

    def run(i: int) -> None:
        results[i] = [pipe(inputs[i]) for _ in range(5)]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, want in enumerate(expected):
        assert all(torch.equal(got, want) for got in results[i])
    assert strategy.onloaded == ()


def test_excluded_components_live_on_the_device():
    class Excluding(TwoNets):
        _exclude_from_cpu_offload = ("second",)

    torch.manual_seed(0)
    pipe = Excluding(first=Net(), second=Net())
    strategy = pipe.enable_offload(SequentialOffload(), device=META)
    assert pipe.second.gain.device == META and pipe.first.gain.device.type == "cpu"
    assert pipe(torch.randn(1, 6)).device == META
    assert not any(name.startswith("second") for name in strategy.onloaded)
    pipe.disable_offload()
    assert all(t.device.type == "cpu" for t in all_tensors(pipe).values())


def test_remove_takes_every_hook_away():
    pipe = make_pipe()
    pipe.enable_offload(SequentialOffload(), device=META)
    pipe(torch.randn(1, 6))
    pipe.remove_all_hooks()
    assert pipe.offload_strategy is None
    for _, component in pipe._modules():
        for module in component.modules():
            assert not module._forward_pre_hooks and not module._forward_hooks
    assert pipe(torch.randn(1, 6)).device.type == "cpu"


def test_an_instance_serves_one_pipeline_at_a_time():
    strategy = SequentialOffload()
    make_pipe().enable_offload(strategy, device="cpu")
    with pytest.raises(RuntimeError, match="already applied"):
        make_pipe().enable_offload(strategy, device="cpu")

"""ModelOffload on a toy three-model pipeline.

The CPU is the execution device for exact-output checks; ``meta`` serves as a second device
that really holds tensors elsewhere: a weight left on the CPU during a forward on ``meta``
tensors raises a device mismatch, so a forward that completes proves the moves happened.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import torch

from diffkit.config import Config
from diffkit.model import Model
from diffkit.pipeline import Pipeline
from diffkit_offload_model.model_offload import ModelOffload

META = torch.device("meta")


class ToyConfig(Config):
    owner_name = "ToyNet"
    features: int = 6


class ToyNet(Model):
    """Two layers and a buffer; ``decode`` reaches the layers without going through ``forward``."""

    config_class = ToyConfig

    def __init__(self, config: Any = None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        n = self.config.features
        self.proj = torch.nn.Linear(n, n)
        self.norm = torch.nn.LayerNorm(n)
        self.register_buffer("shift", torch.linspace(-1, 1, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x)) + self.shift

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x))


class ToyPipeline(Pipeline):
    model_cpu_offload_seq = "encoder->denoiser->decoder"

    def __init__(self, encoder: Any, denoiser: Any, decoder: Any, helper: Any) -> None:
        super().__init__(encoder=encoder, denoiser=denoiser, decoder=decoder, helper=helper)

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor, steps: int = 2) -> torch.Tensor:
        x = self.encoder(x.to(self._execution_device))
        for _ in range(steps):
            x = x - 0.1 * self.denoiser(x)
        out = self.decoder(x)
        self.maybe_free_model_hooks()
        return out


def make_pipe() -> ToyPipeline:
    torch.manual_seed(0)
    return ToyPipeline(encoder=ToyNet(), denoiser=ToyNet(), decoder=ToyNet(), helper=ToyNet())


def tensors_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def record_during_forward(pipe: ToyPipeline, strategy: ModelOffload) -> list[tuple[str, tuple[str, ...], dict[str, str]]]:
    """For each component forward: (name, what is onloaded, device of every component's weight)."""
    seen: list[tuple[str, tuple[str, ...], dict[str, str]]] = []

    def hook(name: str):
        def record(module, args):
            devices = {n: pipe.components[n].proj.weight.device.type for n in ("encoder", "denoiser", "decoder", "helper")}
            seen.append((name, strategy.onloaded, devices))

        return record

    for name in ("encoder", "denoiser", "decoder", "helper"):
        getattr(pipe, name).register_forward_pre_hook(hook(name))  # after the strategy's own hook
    return seen


def test_components_onload_in_declared_order_and_the_previous_one_goes_back():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device="cpu")
    seen = record_during_forward(pipe, strategy)
    pipe(torch.randn(3, 6))
    assert [(name, onloaded) for name, onloaded, _ in seen] == [
        ("encoder", ("encoder",)),
        ("denoiser", ("denoiser",)),
        ("denoiser", ("denoiser",)),
        ("decoder", ("decoder",)),
    ]
    assert strategy.onloaded == ()


def test_weights_really_move_to_the_execution_device_and_back():
    pipe = make_pipe()
    before = {n: {k: (t, t.clone()) for k, t in tensors_of(m).items()} for n, m in pipe._modules()}
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    seen = record_during_forward(pipe, strategy)
    out = pipe(torch.randn(3, 6))  # a CPU input; any CPU weight left in a forward would raise
    assert out.device == META
    for name, _, devices in seen:
        assert devices[name] == "meta"
        assert all(d == "cpu" for other, d in devices.items() if other != name)
    assert strategy.onloaded == ()
    for name, module in pipe._modules():
        for key, tensor in tensors_of(module).items():
            original, values = before[name][key]
            assert tensor is original, f"{name}.{key} was not restored"
            assert torch.equal(tensor, values)


def test_outputs_equal_the_plain_run_exactly():
    pipe = make_pipe()
    x = torch.randn(4, 6)
    expected = pipe(x)
    pipe.enable_offload(ModelOffload(), device="cpu")
    assert torch.equal(pipe(x), expected)
    assert torch.equal(pipe(x), expected)  # re-armed after maybe_free_model_hooks


def test_components_called_outside_the_pipeline_call_do_not_hit_a_device_mismatch():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    x = torch.randn(2, 6)
    with torch.inference_mode():
        assert pipe.denoiser(x).device == META
        assert strategy.onloaded == ("denoiser",)
        assert pipe.decoder.decode(x).device == META  # not forward: the children's hooks onload it
        assert strategy.onloaded == ("decoder",)
        assert pipe.denoiser(x=x).device == META  # keyword inputs are moved too
    pipe.maybe_free_model_hooks()
    assert strategy.onloaded == ()
    assert all(t.device.type == "cpu" for _, m in pipe._modules() for t in tensors_of(m).values())


def test_components_outside_the_sequence_have_their_own_hook_until_free():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    with torch.inference_mode():
        pipe.helper(torch.randn(1, 6))
        pipe.encoder(torch.randn(1, 6))
        assert set(strategy.onloaded) == {"helper", "encoder"}
        pipe.denoiser(torch.randn(1, 6))
        assert set(strategy.onloaded) == {"helper", "denoiser"}
    pipe.maybe_free_model_hooks()
    assert strategy.onloaded == ()
    assert pipe.helper.proj.weight.device.type == "cpu"


def test_a_component_still_running_is_offloaded_when_its_call_ends():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    during: list[tuple[str, ...]] = []

    def free_from_elsewhere(module, args):
        strategy.free()  # as another thread's maybe_free_model_hooks() would
        during.append(strategy.onloaded)

    pipe.denoiser.register_forward_pre_hook(free_from_elsewhere)
    with torch.inference_mode():
        out = pipe.denoiser(torch.randn(2, 6))  # would raise if its weights had gone back mid-call
    assert out.device == META
    assert during == [("denoiser",)]
    assert strategy.onloaded == ()
    assert pipe.denoiser.proj.weight.device.type == "cpu"


def test_a_failing_forward_does_not_leave_the_component_busy():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    with pytest.raises(RuntimeError), torch.inference_mode():
        pipe.denoiser(torch.randn(2, 5))  # wrong width
    pipe.maybe_free_model_hooks()
    assert strategy.onloaded == ()
    assert pipe.denoiser.proj.weight.device.type == "cpu"


def test_concurrent_calls_give_the_same_outputs():
    pipe = make_pipe()
    inputs = [torch.randn(3, 6, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    expected = [pipe(x, steps=3) for x in inputs]
    pipe.enable_offload(ModelOffload(), device="cpu")
    results: dict[int, torch.Tensor] = {}

    def run(i: int) -> None:
        for _ in range(5):
            results[i] = pipe(inputs[i], steps=3)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, x in enumerate(expected):
        assert torch.equal(results[i], x)
    assert pipe.offload_strategy.onloaded == ()


def test_excluded_components_stay_on_the_execution_device():
    class Excluding(ToyPipeline):
        _exclude_from_cpu_offload = ("helper",)

    torch.manual_seed(0)
    pipe = Excluding(encoder=ToyNet(), denoiser=ToyNet(), decoder=ToyNet(), helper=ToyNet())
    weight = pipe.helper.proj.weight
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    assert pipe.helper.proj.weight.device == META
    with torch.inference_mode():
        assert pipe.helper(torch.randn(1, 6)).device == META  # its inputs are moved as well
    pipe.maybe_free_model_hooks()
    assert pipe.helper.proj.weight.device == META and "helper" not in strategy.onloaded
    pipe.disable_offload()
    assert pipe.helper.proj.weight is weight


def test_remove_takes_every_hook_away():
    pipe = make_pipe()
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    with torch.inference_mode():
        pipe.denoiser(torch.randn(1, 6))
    pipe.disable_offload()
    assert pipe.offload_strategy is None
    for _, component in pipe._modules():
        for module in component.modules():
            assert not module._forward_pre_hooks and not module._forward_hooks
    assert all(t.device.type == "cpu" for _, m in pipe._modules() for t in tensors_of(m).values())
    with pytest.raises(RuntimeError, match="not applied"):
        _ = strategy.execution_device


def test_a_replaced_weight_is_kept_when_the_component_goes_back():
    pipe = make_pipe()
    original = pipe.denoiser.proj.weight
    strategy = pipe.enable_offload(ModelOffload(), device=META)
    with torch.inference_mode():
        pipe.denoiser(torch.randn(1, 6))
    new_values = torch.full_like(original, 0.5)
    pipe.denoiser.proj.weight = torch.nn.Parameter(new_values.clone())  # e.g. a user loading new weights
    strategy.free()
    assert pipe.denoiser.proj.weight is original  # same object, new values
    assert torch.equal(original.detach(), new_values)


def test_apply_checks_the_pipeline_and_the_instance():
    class NoOrder(ToyPipeline):
        model_cpu_offload_seq = ""

    class Typo(ToyPipeline):
        model_cpu_offload_seq = "encoder->denoisr"

    parts = dict(encoder=ToyNet(), denoiser=ToyNet(), decoder=ToyNet(), helper=ToyNet())
    with pytest.raises(ValueError, match="NoOrder declares no model_cpu_offload_seq"):
        NoOrder(**parts).enable_offload(ModelOffload(), device="cpu")
    with pytest.raises(ValueError, match=r"names \['denoisr'\]"):
        Typo(**parts).enable_offload(ModelOffload(), device="cpu")
    strategy = ModelOffload()
    make_pipe().enable_offload(strategy, device="cpu")
    with pytest.raises(RuntimeError, match="already applied"):
        make_pipe().enable_offload(strategy, device="cpu")

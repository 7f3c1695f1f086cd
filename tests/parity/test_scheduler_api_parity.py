"""The diffusers-style surface of every scheduler both libraries have: the signatures pipelines inspect,
the compatibility lists, the type of ``init_noise_sigma`` and of ``previous_timestep``.

Code written for diffusers asks ``inspect.signature(scheduler.step)`` whether it takes ``generator`` or
``eta`` and ``inspect.signature(scheduler.set_timesteps)`` whether it takes ``timesteps``/``sigmas``;
a name hidden behind ``**kwargs`` is silently dropped there, so each name must be explicit.
"""

from __future__ import annotations

import inspect

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffkit import registry  # noqa: E402
from diffkit.scheduler import Scheduler  # noqa: E402

#: configuration and Hub plumbing, not the sampling surface
NOT_SAMPLING = {"from_config", "from_pretrained", "save_pretrained", "save_config", "load_config", "push_to_hub",
                "extract_init_dict", "get_config_dict", "register_to_config", "register_for_auto_class"}
#: constructor arguments without defaults
REQUIRED = {"VQDiffusionScheduler": {"num_vec_classes": 8}}


def _pairs() -> list[tuple[str, type, type]]:
    pairs = []
    for name in registry.names("scheduler"):
        theirs = getattr(diffusers, name, None)
        if theirs is not None:
            pairs.append((name, registry.get("scheduler", name), theirs))
    return pairs


PAIRS = _pairs()
IDS = [name for name, _, _ in PAIRS]


def _named_parameters(fn) -> dict[str, inspect.Parameter]:
    """Parameters that can be passed by name (``self`` and ``*args``/``**kwargs`` left out)."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind in kinds and n != "self"}


def test_every_diffusers_scheduler_we_ship_is_compared():
    assert len(PAIRS) >= 30, IDS


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_public_methods_take_diffusers_parameter_names(name, ours, theirs):
    """step, add_noise, scale_model_input, set_timesteps and every other public method both classes have."""
    instance = ours(**REQUIRED.get(name, {}))
    shared = [m for m, _ in inspect.getmembers(theirs, callable) if not m.startswith("_") and m not in NOT_SAMPLING]
    shared = [m for m in shared if hasattr(ours, m) and not isinstance(inspect.getattr_static(ours, m), property)]
    assert {"step", "add_noise", "set_timesteps"} & set(shared) or name == "ScoreSdeVeScheduler", name
    for method in shared:
        expected = _named_parameters(getattr(theirs, method))
        got = _named_parameters(getattr(instance, method))  # bound, as pipelines inspect it
        missing = [n for n in expected if n not in got]
        assert not missing, f"{name}.{method} lacks {missing}: {inspect.signature(getattr(instance, method))}"
        positional = [n for n, p in expected.items() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert list(got)[: len(positional)] == positional, f"{name}.{method}: positional order differs"


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_compatibility_lists_are_diffusers(name, ours, theirs):
    assert set(ours.compatibles_names) == set(theirs._compatibles), name


def test_edm_schedulers_do_not_accept_a_ddpm_model():
    edm = registry.get("scheduler", "EDMEulerScheduler")
    ddpm = registry.get("scheduler", "DDPMScheduler")
    assert not edm.is_compatible_with(ddpm) and not edm.is_compatible_with(ddpm().config)
    assert edm.is_compatible_with("EDMEulerScheduler")
    assert registry.get("scheduler", "DPMSolverMultistepScheduler").is_compatible_with({"_class_name": "DDPMScheduler"})


@pytest.mark.parametrize(("name", "ours", "theirs"), PAIRS, ids=IDS)
def test_init_noise_sigma_has_diffusers_type_and_value(name, ours, theirs):
    kwargs = REQUIRED.get(name, {})
    mine, ref = ours(**kwargs), theirs(**kwargs)
    for stage in ("before set_timesteps", "after set_timesteps"):
        if not hasattr(ref, "init_noise_sigma"):
            break
        a, b = mine.init_noise_sigma, ref.init_noise_sigma
        assert isinstance(a, torch.Tensor) == isinstance(b, torch.Tensor), f"{name} {stage}: {type(a)} vs {type(b)}"
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and a.device == b.device and a.cpu().shape == b.shape
        assert float(a) == pytest.approx(float(b), rel=2e-6), f"{name} {stage}"
        if isinstance(mine, registry.get("scheduler", "VQDiffusionScheduler")):
            break
        mine.set_timesteps(5)
        ref.set_timesteps(5)


@pytest.mark.parametrize("name", ["DDPMScheduler", "LCMScheduler", "TCDScheduler"])
def test_previous_timestep_returns_a_tensor_like_diffusers(name):
    ours, ref = registry.get("scheduler", name)(), getattr(diffusers, name)()
    ours.set_timesteps(4)
    ref.set_timesteps(4)
    for t in ref.timesteps:
        a, b = ours.previous_timestep(t), ref.previous_timestep(t)
        assert isinstance(a, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and int(a) == int(b)
    plain, plain_ref = registry.get("scheduler", name)(), getattr(diffusers, name)()
    for t in (torch.tensor(500), 500):  # before set_timesteps: the training chain, ``t - 1`` of the same type
        a, b = plain.previous_timestep(t), plain_ref.previous_timestep(t)
        assert type(a) is type(b) and int(a) == int(b) == 499


def test_diffusers_pipelines_see_the_generator_of_every_scheduler():
    """What diffusers' pipelines do before passing ``generator`` to ``step``."""
    for name, ours, theirs in PAIRS:
        if hasattr(theirs, "step") and "generator" in _named_parameters(theirs.step):
            assert "generator" in set(inspect.signature(ours(**REQUIRED.get(name, {})).step).parameters), name


def test_a_new_scheduler_gets_set_timesteps_with_the_signature_of_its_plan():
    class Tiny(Scheduler):
        def plan(self, num_inference_steps: int | None = None, device=None, sigmas=None):
            raise NotImplementedError

    assert list(inspect.signature(Tiny().set_timesteps).parameters) == ["num_inference_steps", "device", "sigmas"]


@pytest.mark.parametrize("planned", [False, True])
@pytest.mark.parametrize("timestep", ["first", 0.123, 99.0])
def test_edm_dpmsolver_scales_input_like_diffusers_before_a_plan_and_off_it(planned, timestep):
    """diffusers scales on the training ladder before set_timesteps, and with the last sigma off the plan."""
    ours, ref = registry.get("scheduler", "EDMDPMSolverMultistepScheduler")(), diffusers.EDMDPMSolverMultistepScheduler()
    if planned:
        ours.set_timesteps(5)
        ref.set_timesteps(5)
    t = ref.timesteps[0] if timestep == "first" else torch.tensor(timestep)
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours.scale_model_input(x, t), ref.scale_model_input(x, t), rtol=2e-6, atol=1e-5)
    assert ours.step_index == ref.step_index


@pytest.mark.parametrize("method", ["step", "step_plms", "step_prk"])
def test_pndm_steps_without_a_plan_raise_value_error_like_diffusers(method):
    x = torch.zeros(1, 3, 4, 4)
    with pytest.raises(ValueError, match="set_timesteps"):
        getattr(registry.get("scheduler", "PNDMScheduler")(skip_prk_steps=True), method)(x, 10, x)
    with pytest.raises(ValueError):
        getattr(diffusers.PNDMScheduler(skip_prk_steps=True), method if method != "step" else "step_plms")(x, 10, x)

"""The import paths diffusers users type: ``from diffkit_scheduler_ddim import DDIMScheduler`` and
``from diffkit import DDIMScheduler``, for every installed plugin, without importing torch early."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

import diffkit
from diffkit._registry import KINDS, registry
from diffkit.errors import ComponentNotFoundError
from diffkit.testing import plugin

#: kinds whose registrations are classes a plugin package exports (pretrained names are paths)
CLASS_KINDS = [kind for kind in KINDS if kind != "pretrained"]


def _registered_classes() -> list[tuple[str, str, str]]:
    """(kind, name, "module:Attr") of every class an installed plugin registers."""
    return [
        (kind, entry.name, entry.target)
        for kind in CLASS_KINDS
        for entry in registry.entries(kind)
        if isinstance(entry.target, str)
    ]


def test_every_plugin_package_exports_what_it_registers():
    found = _registered_classes()
    assert len({target.split(".")[0] for _, _, target in found}) >= 30  # every installed plugin package
    for kind, name, target in found:
        package_name = target.split(".")[0]
        attr = target.rsplit(":", 1)[1]
        package = importlib.import_module(package_name)
        assert getattr(package, attr) is registry.get(kind, name), target
        assert attr in package.__all__ and attr in dir(package), target


def test_plugin_packages_and_diffkit_import_no_torch_until_a_name_is_used():
    packages = sorted({target.split(".")[0] for _, _, target in _registered_classes()})
    code = textwrap.dedent(
        f"""
        import importlib, sys
        import diffkit
        for name in {packages!r}:
            module = importlib.import_module(name)
            module.__all__  # the export table comes from the hook module, still nothing heavy
        print("torch" in sys.modules)
        from diffkit_scheduler_ddim import DDIMScheduler
        from diffkit import DDPMPipeline
        print("torch" in sys.modules, DDIMScheduler.__name__, DDPMPipeline.__name__)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "DDIMScheduler", "DDPMPipeline"]


def test_star_import_and_unknown_names():
    namespace: dict[str, object] = {}
    exec("from diffkit_scheduler_dpmsolver import *", namespace)
    assert namespace["DPMSolverMultistepScheduler"] is registry.get("scheduler", "DPMSolverMultistepScheduler")
    import diffkit_scheduler_ddim

    with pytest.raises(AttributeError, match="no attribute 'NoSuchScheduler'"):
        diffkit_scheduler_ddim.NoSuchScheduler  # noqa: B018
    with pytest.raises(ImportError):
        exec("from diffkit_scheduler_ddim import DDPMScheduler", {})  # registered by another package


@pytest.mark.parametrize("kind", ["pipeline", "model", "scheduler"])
def test_diffkit_resolves_every_registered_name(kind):
    for name in registry.names(kind):
        assert getattr(diffkit, name) is registry.get(kind, name), name


def test_diffkit_missing_name_gives_the_install_hint(diffkit_registry, tmp_path, monkeypatch):
    index = tmp_path / "registry.toml"
    index.write_text('schema = 1\n[packages.diffkit-scheduler-imaginary]\nschedulers = ["ImaginaryScheduler"]\n')
    monkeypatch.setenv("DIFFKIT_REGISTRY_INDEX", str(index))
    with pytest.raises(ComponentNotFoundError) as err:
        exec("from diffkit import ImaginaryScheduler", {})
    assert err.value.kind == "scheduler" and err.value.suggested_packages == ["diffkit-scheduler-imaginary"]
    assert "pip install diffkit-scheduler-imaginary" in str(err.value)
    with pytest.raises(ComponentNotFoundError, match="Did you mean 'ToyPipeline'"):
        with plugin(_toy_hooks(), dist="diffkit-toy"):
            diffkit.ToyPipelin  # noqa: B018
    assert not hasattr(diffkit, "lowercase_name")  # tools probing attributes still get AttributeError


def _toy_hooks() -> object:
    class Hooks:
        @diffkit.hookimpl
        def register_pipelines(self, register):
            register("ToyPipeline", "diffkit.pipeline:Pipeline")

    return Hooks()

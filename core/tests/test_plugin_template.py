"""The plugin template in docs/plugin-template stays a working plugin.

Its hook module is loaded by file path and registered in-process (nothing is installed), and
what it registers must resolve; its packaging must follow the naming rules in CONTRIBUTING.md;
and its own test suite must pass.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest

from diffkit import Processor
from diffkit._registry import KINDS, normalize_dist, registry

TEMPLATE = Path(__file__).resolve().parents[2] / "docs" / "plugin-template"
SRC = TEMPLATE / "src"


def load_hooks() -> ModuleType:
    """The template's hook module, imported from its file (under a private name)."""
    path = SRC / "diffkit_example" / "hooks.py"
    spec = importlib.util.spec_from_file_location("_template_hooks_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pyproject() -> dict:
    with (TEMPLATE / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def test_template_hooks_register_names_that_resolve(monkeypatch):
    monkeypatch.syspath_prepend(str(SRC))  # so that the "module:Attr" targets import
    with registry.isolated(autoload=False) as reg:
        info = reg.register_plugin(load_hooks(), dist="diffkit-example", version="0.1.0")
        assert info.status == "loaded" and info.error is None
        assert info.provides == {"processor": ["ExampleRescaleProcessor"]}
        registered = [(kind, entry) for kind in KINDS for entry in reg.entries(kind)]
        assert registered, "the template registers nothing"
        for kind, entry in registered:
            assert isinstance(entry.target, str) and ":" in entry.target, "hook modules register strings"
            module_path = SRC.joinpath(*entry.module.split("."))
            assert module_path.with_suffix(".py").is_file() or (module_path / "__init__.py").is_file(), entry
            obj = reg.get(kind, entry.name)
            assert obj.__name__ == entry.name
        cls = reg.get("processor", "ExampleRescaleProcessor")
        assert issubclass(cls, Processor)
        processor = cls()
        assert processor.preprocess(0.25) == -0.5 and processor.postprocess(0.5) == 0.75


def test_template_packaging_follows_the_naming_rules(pyproject):
    project = pyproject["project"]
    dist = project["name"]
    assert dist.startswith("diffkit-") and dist == normalize_dist(dist)
    package = "diffkit_" + dist.removeprefix("diffkit-").replace("-", "_")
    assert (SRC / package / "__init__.py").is_file()
    (hook_module,) = project["entry-points"]["diffkit"].values()
    assert hook_module == f"{package}.hooks"
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [f"src/{package}"]
    assert any(dep.startswith("diffkit>=") and "<" in dep for dep in project["dependencies"]), (
        "a plugin pins the range of core versions it supports"
    )
    assert not any(dep.startswith("diffusers") for dep in project["dependencies"]), "diffusers is for tests only"


def test_template_hook_module_imports_nothing_heavy():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('h', {str(SRC / 'diffkit_example' / 'hooks.py')!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('torch', 'numpy', 'pydantic', 'diffkit_example.rescale') if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_template_own_tests_pass():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "tests"],
        cwd=TEMPLATE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout

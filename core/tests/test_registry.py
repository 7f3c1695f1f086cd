"""The plugin registry: isolation of broken plugins, duplicates, allow/deny lists, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest

import diffkit
from diffkit import ComponentNotFoundError, DuplicateNameError, PluginError, registry
from diffkit._index import read_index
from diffkit.hookspecs import hookimpl
from diffkit.testing import plugin


def _hooks(**functions) -> types.ModuleType:
    """A hook module built in memory."""
    module = types.ModuleType("in_memory_hooks")
    for name, function in functions.items():
        setattr(module, name, function)
    return module


def _scheduler_plugin(name: str, target: str = "fractions:Fraction") -> types.ModuleType:
    @hookimpl
    def register_schedulers(register):
        register(name, target)

    return _hooks(register_schedulers=register_schedulers)


def test_in_process_plugin_registers_and_resolves(diffkit_registry):
    import fractions

    with plugin(_scheduler_plugin("FracScheduler"), dist="diffkit-frac"):
        assert registry.names("scheduler") == ["FracScheduler"]
        assert registry.get("scheduler", "FracScheduler") is fractions.Fraction
        assert registry.entry("scheduler", "FracScheduler").dist == "diffkit-frac"
    assert registry.names("scheduler") == []


def test_bad_target_is_recorded_and_others_keep_working(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    good = _scheduler_plugin("GoodScheduler")
    bad = _scheduler_plugin("BadScheduler", target="not a target")
    with plugin(good, dist="diffkit-good"), plugin(bad, dist="diffkit-bad") as info:
        assert info.status == "failed"
        assert "must look like 'package.module:Attr'" in info.error
        assert registry.names("scheduler") == ["GoodScheduler"]
        with pytest.raises(ComponentNotFoundError, match="Installed schedulers: GoodScheduler"):
            registry.get("scheduler", "BadScheduler")


def test_bad_target_raises_in_strict_mode(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="diffkit-bad.*must look like"):
        with plugin(_scheduler_plugin("BadScheduler", target="nocolon"), dist="diffkit-bad"):
            pass
    assert registry.plugin("diffkit-bad") is None


def test_hook_that_raises_is_isolated(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")

    @hookimpl
    def register_models(register):
        register("HalfModel", "fractions:Fraction")
        raise RuntimeError("boom")

    with plugin(_hooks(register_models=register_models), dist="diffkit-boom") as info:
        assert info.status == "failed" and "RuntimeError: boom" in info.error
        assert registry.names("model") == []  # nothing half-registered


def test_duplicate_name_names_both_distributions(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    with plugin(_scheduler_plugin("Twin"), dist="diffkit-one", version="1.0"), plugin(
        _scheduler_plugin("Twin"), dist="diffkit-two", version="2.0"
    ):
        with pytest.raises(DuplicateNameError) as err:
            registry.get("scheduler", "Twin")
        assert "diffkit-one 1.0" in str(err.value) and "diffkit-two 2.0" in str(err.value)


def test_duplicate_name_raises_in_strict_mode(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with plugin(_scheduler_plugin("Twin"), dist="diffkit-one"):
        with pytest.raises(DuplicateNameError, match="diffkit-one.*diffkit-two"):
            with plugin(_scheduler_plugin("Twin"), dist="diffkit-two"):
                pass


def test_replaces_resolves_a_duplicate(diffkit_registry):
    @hookimpl
    def register_schedulers(register):
        register("Twin", "decimal:Decimal", replaces="diffkit-one")

    import decimal

    with plugin(_scheduler_plugin("Twin"), dist="diffkit-one"), plugin(
        _hooks(register_schedulers=register_schedulers), dist="diffkit-better"
    ):
        assert registry.get("scheduler", "Twin") is decimal.Decimal


def test_misspelled_hook_is_caught(diffkit_registry, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")

    @hookimpl
    def register_scheduler(register):  # singular: not a diffkit hook
        register("X", "fractions:Fraction")

    with plugin(_hooks(register_scheduler=register_scheduler), dist="diffkit-typo") as info:
        assert info.status == "failed"
        assert "did you mean 'register_schedulers'" in info.error


def test_unknown_name_suggests_close_matches(diffkit_registry):
    with plugin(_scheduler_plugin("EulerDiscreteScheduler"), dist="diffkit-euler"):
        with pytest.raises(ComponentNotFoundError) as err:
            registry.get("scheduler", "EulerDiscretScheduler")
    assert isinstance(err.value, LookupError)
    assert "Did you mean 'EulerDiscreteScheduler'" in str(err.value)
    assert err.value.candidates == ["EulerDiscreteScheduler"]


def test_unknown_kind_is_a_value_error():
    with pytest.raises(ValueError, match="the kinds are"):
        registry.names("widget")


def _write_index(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "registry.toml"
    path.write_text("schema = 1\n" + textwrap.dedent(body))
    return path


def test_not_installed_package_gives_the_pip_command(diffkit_registry, tmp_path, monkeypatch):
    index = _write_index(
        tmp_path,
        """
        [packages.diffkit-pipeline-imaginary]
        path = "plugins/pipeline-imaginary"
        pipelines = ["ImaginaryPipeline"]
        """,
    )
    monkeypatch.setenv("DIFFKIT_REGISTRY_INDEX", str(index))
    with pytest.raises(ComponentNotFoundError) as err:
        registry.get("pipeline", "ImaginaryPipeline", context="model_index.json in /m")
    message = str(err.value)
    assert "No installed plugin provides pipeline 'ImaginaryPipeline' (model_index.json in /m)" in message
    assert f"{sys.executable} -m pip install diffkit-pipeline-imaginary" in message
    assert err.value.suggested_packages == ["diffkit-pipeline-imaginary"]


# -- real entry points: fake distributions on sys.path ---------------------------------------


def _fake_dist(root: Path, dist: str, module: str, source: str) -> None:
    """A minimal installed distribution: a dist-info with a diffkit entry point, and its module."""
    info = root / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[diffkit]\n{dist} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


GOOD = """
    from diffkit.hookspecs import hookimpl

    @hookimpl
    def register_schedulers(register):
        register("FakeGoodScheduler", "fractions:Fraction")
"""


@pytest.fixture
def fake_site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _fake_dist(site, "fake-good", "fake_good_hooks", GOOD)
    _fake_dist(site, "fake-broken", "fake_broken_hooks", "raise ImportError('no module named av')\n")
    monkeypatch.syspath_prepend(str(site))
    for var in ("DIFFKIT_LOAD_PLUGINS", "DIFFKIT_DISABLE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return site


def test_plugin_that_raises_at_import_does_not_break_others(fake_site, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    with registry.isolated(autoload=True):
        broken = registry.plugin("fake-broken")
        assert broken is not None and broken.status == "failed"
        assert "no module named av" in broken.error
        assert registry.get("scheduler", "FakeGoodScheduler").__name__ == "Fraction"


def test_plugin_that_raises_at_import_raises_in_strict_mode(fake_site, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True):
        with pytest.raises(PluginError, match="fake-broken.*no module named av"):
            registry.names("scheduler")


def test_failed_plugin_is_named_when_its_name_is_missing(fake_site, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "0")
    index = _write_index(tmp_path, '[packages.fake-broken]\nschedulers = ["AvScheduler"]\n')
    monkeypatch.setenv("DIFFKIT_REGISTRY_INDEX", str(index))
    with registry.isolated(autoload=True):
        with pytest.raises(ComponentNotFoundError, match="fake-broken is installed but failed to load.*av"):
            registry.get("scheduler", "AvScheduler")


def test_allow_list_and_deny_list(fake_site, tmp_path, monkeypatch):
    index = _write_index(tmp_path, '[packages.fake-good]\nschedulers = ["FakeGoodScheduler"]\n')
    monkeypatch.setenv("DIFFKIT_REGISTRY_INDEX", str(index))
    monkeypatch.setenv("DIFFKIT_LOAD_PLUGINS", "")
    with registry.isolated(autoload=True):
        assert all(p.status == "disabled" for p in registry.plugins())
        assert registry.names("scheduler") == []
        with pytest.raises(ComponentNotFoundError, match="fake-good is installed but disabled by DIFFKIT_LOAD_PLUGINS"):
            registry.get("scheduler", "FakeGoodScheduler")
    monkeypatch.setenv("DIFFKIT_LOAD_PLUGINS", "fake-good")
    with registry.isolated(autoload=True):
        assert registry.names("scheduler") == ["FakeGoodScheduler"]
        assert registry.plugin("fake-broken").status == "disabled"
    monkeypatch.delenv("DIFFKIT_LOAD_PLUGINS")
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "fake-good,fake-broken")
    with registry.isolated(autoload=True):
        assert registry.plugin("fake-good").status == "disabled"
        assert "DIFFKIT_DISABLE_PLUGINS" in registry.plugin("fake-good").error


# -- the installed first-party plugins -------------------------------------------------------


def test_registry_toml_agrees_with_first_party_plugins(diffkit_installed_registry):
    first_party = {dist: pkg for dist, pkg in read_index().items() if pkg.first_party}
    assert first_party, "registry.toml lists no first-party package"
    for dist, pkg in first_party.items():
        info = registry.plugin(dist)
        assert info is not None, f"{dist} is in registry.toml but not installed"
        assert info.status == "loaded", f"{dist}: {info.error}"
        provides = {kind: sorted(names) for kind, names in info.provides.items() if names}
        expected = {kind: sorted(names) for kind, names in pkg.provides.items()}
        assert provides == expected, f"{dist}: registry.toml says {expected}, the plugin registers {provides}"
    installed_first_party = {
        p.dist for p in registry.plugins() if p.hook_module.startswith("diffkit_")
    }
    assert installed_first_party <= set(first_party), "a first-party plugin is missing from registry.toml"


def test_registry_toml_ships_inside_the_core_and_matches_the_repo_copy():
    packaged = Path(diffkit.__file__).with_name("registry.toml")
    repo_copy = Path(__file__).resolve().parents[2] / "registry.toml"
    assert packaged.is_file()
    assert packaged.read_text() == repo_copy.read_text()


def _run(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_diffkit_does_not_import_torch():
    result = _run("import sys, json, diffkit; print(json.dumps({'torch': 'torch' in sys.modules}))")
    assert result == {"torch": False}


def test_hook_modules_and_registry_build_do_not_import_torch():
    code = textwrap.dedent(
        """
        import sys, json
        from diffkit import registry
        plugins = registry.plugins()
        names = {k: registry.names(k) for k in ("pipeline", "model", "scheduler", "attention_backend")}
        print(json.dumps({"torch": "torch" in sys.modules, "plugins": [p.hook_module for p in plugins],
                          "failed": [p.dist for p in plugins if p.status != "loaded"]}))
        """
    )
    result = _run(code)
    assert result["plugins"], "no installed plugin found"
    assert result["failed"] == []
    assert result["torch"] is False


def test_resolving_a_name_imports_only_its_module():
    code = textwrap.dedent(
        """
        import sys, json
        from diffkit import registry
        registry.names("attention_backend")
        before = {m for m in sys.modules if m.startswith("diffkit_")}
        registry.get("attention_backend", "sdpa")
        after = {m for m in sys.modules if m.startswith("diffkit_")}
        print(json.dumps(sorted(after - before)))
        """
    )
    assert _run(code) == ["diffkit_attention_sdpa.sdpa"]


def test_diffkit_plugins_shows_every_plugin_in_strict_mode(fake_site, monkeypatch, capsys):
    from diffkit import cli

    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")
    with registry.isolated(autoload=True):
        code = cli.main(["plugins"])
    out, err = capsys.readouterr()
    assert code == 1
    assert err.count("\n") == 1 and "fake-broken" in err and "no module named av" in err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("fake-")}
    assert rows["fake-good"][2] == "loaded" and rows["fake-broken"][2] == "failed"
    assert os.environ["DIFFKIT_STRICT_PLUGINS"] == "1"  # restored after the lenient look

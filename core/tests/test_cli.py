"""The ``diffkit`` CLI: ``plugins``, ``list`` and ``info``, run in-process against an isolated registry."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from diffkit import cli
from diffkit._registry import KINDS, registry
from diffkit.errors import PluginError
from diffkit.hookspecs import hookimpl

PY = sys.executable

INDEX = """\
schema = 1

[packages.diffkit-toy]
path = "plugins/toy"
description = "toy pipeline, installed in-process by the tests"
pipelines = ["ToyPipeline"]
models = ["ToyModel"]

[packages.diffkit-known-sched]
path = "plugins/known-sched"
description = "a scheduler the tests never install"
schedulers = ["KnownScheduler"]

[packages.diffkit-known-loader]
path = "plugins/known-loader"
description = "a component loader the tests never install"
component_loaders = ["transformers"]

[packages.acme-diffkit-broken]
community = true
description = "installed in-process, fails to load"
models = ["BrokenModel"]
"""


def make_plugin(name: str = "toy_hooks", fail: str | None = None, **by_kind: dict[str, Any]) -> types.ModuleType:
    """A hook module registering ``by_kind[kind][name] = target``; ``fail`` names a hook that raises."""
    module = types.ModuleType(name)
    for kind, names in by_kind.items():
        hook_name = KINDS[kind]

        def hook(register: Any, _names: dict[str, Any] = names) -> None:
            for registered, target in _names.items():
                register(registered, target)

        setattr(module, hook_name, hookimpl(hook))
    if fail is not None:

        def broken(register: Any) -> None:
            raise RuntimeError("boom")

        setattr(module, fail, hookimpl(broken))
    return module


TOY = make_plugin(
    pipeline={"ToyPipeline": "toy_pkg.pipeline:ToyPipeline"},
    model={"ToyModel": "toy_pkg.model:ToyModel"},
    scheduler={"ToyScheduler": "toy_pkg.scheduler:ToyScheduler"},
)


@pytest.fixture
def reg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An empty in-process registry and a registry.toml written for the tests."""
    index = tmp_path / "registry.toml"
    index.write_text(INDEX)
    monkeypatch.setenv("DIFFKIT_REGISTRY_INDEX", str(index))
    with registry.isolated(autoload=False) as fresh:
        yield fresh


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugin errors recorded instead of raised, as outside the test suite."""
    monkeypatch.delenv("DIFFKIT_STRICT_PLUGINS", raising=False)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, *needles: str, expected_code: int = 2) -> None:
    assert code == expected_code
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def write_index(folder: Path, data: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(data))
    return folder


# -- top level ---------------------------------------------------------------------------


def test_no_command_is_a_one_line_usage_error(capsys):
    code, out, err = run(capsys)
    assert_one_line_error(code, out, err, "choose a command", "plugins", "list", "info")


def test_unknown_option_is_a_one_line_usage_error(capsys):
    code, out, err = run(capsys, "list", "--bogus")
    assert_one_line_error(code, out, err, "unrecognized arguments: --bogus")


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out.strip() == "diffkit 0.1.0"
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for command in ("plugins", "list", "info"):
        assert command in out


# -- plugins -----------------------------------------------------------------------------


def test_plugins_table_lists_each_distribution_and_what_it_provides(reg, capsys):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    reg.register_plugin(make_plugin(attention_backend={"fancy": "fancy_mod:Fancy"}), dist="diffkit-fancy")
    code, out, err = run(capsys, "plugins")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["DISTRIBUTION", "VERSION", "STATUS", "PROVIDES"]
    toy = next(line for line in lines if line.startswith("diffkit-toy"))
    assert "1.2.3" in toy and "loaded" in toy
    assert "pipeline: ToyPipeline" in toy and "model: ToyModel" in toy and "scheduler: ToyScheduler" in toy
    fancy = next(line for line in lines if line.startswith("diffkit-fancy"))
    assert "attention_backend: fancy" in fancy and " - " in fancy  # no version


def test_plugins_json(reg, capsys):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0
    data = json.loads(out)
    assert data == [
        {
            "dist": "diffkit-toy",
            "version": "1.2.3",
            "status": "loaded",
            "error": None,
            "problems": [],
            "hook_module": "toy_hooks",
            "provides": {"pipeline": ["ToyPipeline"], "model": ["ToyModel"], "scheduler": ["ToyScheduler"]},
        }
    ]


def test_plugins_when_none_is_installed(reg, capsys):
    code, out, _ = run(capsys, "plugins")
    assert code == 0 and "No diffkit plugins are installed" in out
    code, out, _ = run(capsys, "plugins", "--json")
    assert code == 0 and json.loads(out) == []


def test_plugins_shows_a_failed_plugin_and_its_error(reg, capsys, lenient):
    reg.register_plugin(TOY, dist="diffkit-toy")
    info = reg.register_plugin(make_plugin(fail="register_models"), dist="acme-diffkit-broken")
    assert info.status == "failed"
    code, out, _ = run(capsys, "plugins")
    assert code == 0
    broken = next(line for line in out.splitlines() if line.startswith("acme-diffkit-broken "))
    assert "failed" in broken
    assert re.search(r"^acme-diffkit-broken: register_models raised RuntimeError: boom$", out, re.M)
    data = {p["dist"]: p for p in json.loads(run(capsys, "plugins", "--json")[1])}
    assert data["acme-diffkit-broken"]["status"] == "failed"
    assert "boom" in data["acme-diffkit-broken"]["error"]
    assert data["diffkit-toy"]["status"] == "loaded"


def test_strict_plugin_error_is_one_line_exit_1(reg, capsys, monkeypatch):
    def failing() -> None:
        raise PluginError("plugin 'x' failed to load: ImportError: no module named 'y'\n(strict)")

    monkeypatch.setattr(registry, "plugins", failing)
    code, out, err = run(capsys, "plugins")
    assert_one_line_error(code, out, err, "plugin 'x' failed to load", expected_code=1)


# -- list --------------------------------------------------------------------------------


def test_list_shows_installed_names_by_kind(reg, capsys):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    code, out, err = run(capsys, "list")
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "pipelines:",
        "  ToyPipeline  diffkit-toy 1.2.3",
        "",
        "models:",
        "  ToyModel  diffkit-toy 1.2.3",
        "",
        "schedulers:",
        "  ToyScheduler  diffkit-toy 1.2.3",
    ]


@pytest.mark.parametrize("kind", ["scheduler", "schedulers", "Schedulers", "SCHEDULER"])
def test_list_one_kind_accepts_singular_and_plural(reg, capsys, kind):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    code, out, _ = run(capsys, "list", kind)
    assert code == 0
    assert out.splitlines() == ["schedulers:", "  ToyScheduler  diffkit-toy 1.2.3"]


@pytest.mark.parametrize("kind", ["attention-backends", "attention_backend", "offload-strategies", "pretrained"])
def test_list_an_empty_kind_says_none(reg, capsys, kind):
    code, out, _ = run(capsys, "list", kind)
    assert code == 0
    assert out.splitlines()[1] == "  (none)"


def test_list_with_nothing_installed_points_at_available(reg, capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0 and "diffkit list --available" in out


def test_list_unknown_kind_is_one_line_exit_2(reg, capsys):
    code, out, err = run(capsys, "list", "schedulerz")
    assert_one_line_error(code, out, err, "unknown kind 'schedulerz'", "did you mean", "pipelines")


def test_list_available_adds_known_packages_with_install_commands(reg, capsys):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    code, out, _ = run(capsys, "list", "schedulers", "--available")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "schedulers:"
    assert lines[1].split() == ["ToyScheduler", "diffkit-toy", "1.2.3"]  # installed names first
    assert lines[2].split() == [
        "KnownScheduler",
        "diffkit-known-sched",
        "(not",
        "installed):",
        PY,
        "-m",
        "pip",
        "install",
        "diffkit-known-sched",
    ]
    # names the installed toy plugin provides are not listed twice
    code, out, _ = run(capsys, "list", "pipelines", "--available")
    assert out.count("ToyPipeline") == 1 and "not installed" not in out


def test_list_available_explains_installed_but_failed(reg, capsys, lenient):
    reg.register_plugin(make_plugin(fail="register_models"), dist="acme-diffkit-broken")
    code, out, _ = run(capsys, "list", "models", "--available")
    assert code == 0
    row = next(line for line in out.splitlines() if "BrokenModel" in line)
    assert "acme-diffkit-broken is installed but failed" in row and "boom" in row
    assert "pip install" not in row


def test_list_json(reg, capsys):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    code, out, _ = run(capsys, "list", "--available", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {
        "pipelines",
        "models",
        "schedulers",
        "processors",
        "attention_backends",
        "offload_strategies",
        "step_caches",
        "component_loaders",
        "pretrained",
    }
    assert data["pipelines"] == [
        {
            "name": "ToyPipeline",
            "status": "installed",
            "dist": "diffkit-toy",
            "version": "1.2.3",
            "target": "toy_pkg.pipeline:ToyPipeline",
        }
    ]
    (known,) = data["component_loaders"]
    assert known["name"] == "transformers" and known["status"] == "not installed"
    assert known["install"] == f"{PY} -m pip install diffkit-known-loader"
    assert data["processors"] == []


def test_list_shows_conflicting_names(reg, capsys, lenient):
    # two third-party packages (a first-party one would win the name)
    reg.register_plugin(TOY, dist="diffkit-toy-fork", version="1.0")
    reg.register_plugin(make_plugin(pipeline={"ToyPipeline": "other.mod:ToyPipeline"}), dist="diffkit-other")
    code, out, _ = run(capsys, "list", "pipelines")
    assert code == 0
    row = next(line for line in out.splitlines() if "ToyPipeline" in line)
    assert "CONFLICT" in row and "diffkit-toy-fork 1.0" in row and "diffkit-other" in row


# -- info --------------------------------------------------------------------------------

TOY_INDEX = {
    "_class_name": "ToyPipeline",
    "_diffusers_version": "0.42.1",
    "unet": ["diffusers", "ToyModel"],
    "scheduler": ["diffkit", "ToyScheduler"],
    "safety_checker": [None, None],
    "requires_safety_checker": False,
}


def test_info_when_everything_is_installed(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    folder = write_index(tmp_path / "ckpt", TOY_INDEX)
    code, out, err = run(capsys, "info", str(folder))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"model_index.json of {folder}"
    assert lines[1] == "pipeline: ToyPipeline  ->  diffkit-toy 1.2.3 (pipeline)"
    assert lines[2] == "components:"
    assert lines[3].split() == ["unet", "[diffusers,", "ToyModel]", "diffkit-toy", "1.2.3", "(model)"]
    assert lines[4].split() == ["scheduler", "[diffkit,", "ToyScheduler]", "diffkit-toy", "1.2.3", "(scheduler)"]
    assert lines[5].split() == ["safety_checker", "[null,", "null]", "(absent)"]
    assert lines[6] == "parameters: requires_safety_checker=false"
    assert lines[-1] == "Everything it needs is installed."


def test_info_missing_components_say_how_to_install_them(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    data = {
        "_class_name": "ToyPipeline",
        "unet": ["diffusers", "ToyModel"],
        "scheduler": ["diffusers", "KnownScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "vae": ["diffusers", "TotallyUnknownModel"],
    }
    folder = write_index(tmp_path / "ckpt", data)
    code, out, err = run(capsys, "info", str(folder))
    assert code == 1 and err == ""
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "[" in line}
    assert rows["unet"].endswith("diffkit-toy 1.2.3 (model)")
    for name in ("scheduler", "text_encoder", "tokenizer", "vae"):
        assert rows[name].endswith("MISSING")
    assert "Missing (3):" in out
    # the transformers loader is reported once, for both components that need it
    assert out.count("component_loader 'transformers' (for text_encoder, tokenizer)") == 1
    assert f"{PY} -m pip install diffkit-known-sched" in out
    assert "No installed plugin provides model 'TotallyUnknownModel'" in out
    assert out.rstrip().endswith("No single known plugin provides: model 'TotallyUnknownModel'")
    install_line = out.splitlines()[out.splitlines().index("Install the known providers with:") + 1]
    assert install_line.split() == [PY, "-m", "pip", "install", "diffkit-known-sched", "diffkit-known-loader"]


def test_info_installed_component_loader_is_the_provider(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    reg.register_plugin(
        make_plugin(component_loader={"transformers": "tl.mod:Loader"}), dist="diffkit-tl", version="0.3"
    )
    folder = write_index(tmp_path / "ckpt", {"_class_name": "ToyPipeline", "text_encoder": ["transformers", "T5"]})
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("  text_encoder"))
    assert row.endswith("diffkit-tl 0.3 (component_loader 'transformers')")


def test_info_missing_pipeline_class(reg, capsys, tmp_path):
    folder = write_index(tmp_path / "ckpt", {"_class_name": "ToyPipeline"})
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 1
    assert "pipeline: ToyPipeline  ->  MISSING" in out
    assert f"{PY} -m pip install diffkit-toy" in out


def test_info_json(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    data = dict(TOY_INDEX, scheduler=["diffusers", "KnownScheduler"])
    folder = write_index(tmp_path / "ckpt", data)
    code, out, _ = run(capsys, "info", str(folder), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["type"] == "pipeline" and report["class_name"] == "ToyPipeline"
    assert report["provider"]["dist"] == "diffkit-toy"
    by_name = {c["name"]: c for c in report["components"]}
    assert by_name["unet"]["status"] == "ok" and by_name["unet"]["kind"] == "model"
    assert by_name["safety_checker"] == {
        "name": "safety_checker",
        "library": None,
        "class_name": None,
        "status": "absent",
    }
    assert by_name["scheduler"]["status"] == "missing"
    assert by_name["scheduler"]["install"] == ["diffkit-known-sched"]
    assert report["missing"] == [{"kind": "scheduler", "name": "KnownScheduler", "needed_by": ["scheduler"]}]
    assert report["install_command"] == f"{PY} -m pip install diffkit-known-sched"
    assert report["parameters"] == {"requires_safety_checker": False}


def test_info_single_model_config(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    folder = tmp_path / "unet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "ToyModel", "sample_size": 8}))
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 0
    assert out.splitlines()[:2] == [f"config.json of {folder}", "class: ToyModel  ->  diffkit-toy 1.2.3 (model)"]
    (folder / "config.json").write_text(json.dumps({"_class_name": "KnownScheduler"}))
    code, out, _ = run(capsys, "info", str(folder / "config.json"))
    assert code == 1 and "class: KnownScheduler  ->  MISSING" in out
    assert f"{PY} -m pip install diffkit-known-sched" in out


def test_info_transformers_model_folder_goes_to_its_component_loader(reg, capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["CLIPTextModel"], "model_type": "clip"}))
    code, out, _ = run(capsys, "info", str(tmp_path))
    assert code == 1
    assert "class: [transformers, CLIPTextModel]  ->  MISSING" in out
    assert f"{PY} -m pip install diffkit-known-loader" in out


def test_info_conflicting_providers_are_reported(reg, capsys, tmp_path, lenient):
    reg.register_plugin(TOY, dist="diffkit-toy-fork", version="1.0")  # third-party, as diffkit-other
    reg.register_plugin(make_plugin(model={"ToyModel": "other.mod:ToyModel"}), dist="diffkit-other", version="2.0")
    folder = write_index(tmp_path / "ckpt", {"_class_name": "ToyPipeline", "unet": ["diffusers", "ToyModel"]})
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("  unet"))
    assert row.endswith("CONFLICT")
    assert "Missing or ambiguous (1):" in out
    assert "model 'ToyModel' is registered by more than one plugin" in out
    assert "diffkit-toy-fork 1.0" in out and "diffkit-other 2.0" in out
    (unet,) = json.loads(run(capsys, "info", str(folder), "--json")[1])["components"]
    assert unet["status"] == "conflict"


def test_info_scheduler_config_folder(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    (tmp_path / "scheduler_config.json").write_text(json.dumps({"_class_name": "ToyScheduler"}))
    code, out, _ = run(capsys, "info", str(tmp_path))
    assert code == 0 and "class: ToyScheduler  ->  diffkit-toy (scheduler)" in out


def test_info_remote_code_pipeline_is_not_missing(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    folder = write_index(tmp_path / "ckpt", {"_class_name": ["pipeline", "MyPipe"], "unet": ["diffusers", "ToyModel"]})
    code, out, _ = run(capsys, "info", str(folder))
    assert code == 0
    assert "pipeline.py:MyPipe" in out and "trust_remote_code=True" in out


def test_info_component_code_in_the_checkpoint_is_remote_code_not_missing(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    data = {"_class_name": "ToyPipeline", "unet": ["my_unet", "MyUNet"], "vae": ["other_lib", "Vae"]}
    folder = write_index(tmp_path / "ckpt", data)
    (folder / "unet").mkdir()
    (folder / "unet" / "my_unet.py").write_text("class MyUNet: ...\n")
    code, out, _ = run(capsys, "info", str(folder))
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and "[" in line}
    assert rows["unet"].endswith("custom code unet/my_unet.py (runs only with trust_remote_code=True)")
    assert rows["vae"].endswith("MISSING")  # no vae/other_lib.py and no loader for 'other_lib'
    assert code == 1 and "Missing (1):" in out and "component_loader 'other_lib' (for vae)" in out
    code, out, _ = run(capsys, "info", str(folder), "--json")
    unet = next(c for c in json.loads(out)["components"] if c["name"] == "unet")
    assert unet == {
        "name": "unet", "library": "my_unet", "class_name": "MyUNet", "status": "remote code",
        "code_file": "unet/my_unet.py",
    }


def test_info_component_code_in_a_hub_repo(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    index = {"_class_name": "ToyPipeline", "unet": ["my_unet", "MyUNet"]}
    cache = _hub_cache(tmp_path / "hub", "org/toy", {"model_index.json": index, "unet/my_unet.py": "x = 1\n"})
    code, out, _ = run(capsys, "info", "org/toy", "--local-files-only", "--cache-dir", str(cache))
    assert code == 0 and "custom code unet/my_unet.py" in out
    cache = _hub_cache(tmp_path / "hub2", "org/toy", {"model_index.json": index})
    code, out, _ = run(capsys, "info", "org/toy", "--local-files-only", "--cache-dir", str(cache))
    assert code == 1 and "component_loader 'my_unet' (for unet)" in out


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{not json", "is not valid JSON (line 1"),
        ("[1, 2]", "must hold a JSON object, found list"),
        (json.dumps({"unet": ["diffusers", "ToyModel"]}), "'_class_name' is missing"),
        (json.dumps({"_class_name": "a/b"}), "'_class_name' must be a class name"),
        (json.dumps({"_class_name": "P", "../unet": ["diffusers", "M"]}), "component name '../unet' is not a plain"),
        (json.dumps({"_class_name": "P", "unet/x": ["diffusers", "M"]}), "component name 'unet/x' is not a plain"),
        (
            json.dumps({"_class_name": "P", "unet": ["diffusers", None]}),
            "entry 'unet' must be [library, ClassName]",
        ),
        (json.dumps({"_class_name": "P", "unet": ["../lib", "M"]}), "entry 'unet' must be [library, ClassName]"),
        (json.dumps({"_class_name": "P", "unet": ["diffusers", 3]}), "entry 'unet' must be [library, ClassName]"),
    ],
)
def test_info_bad_model_index_is_one_line_naming_the_file(reg, capsys, tmp_path, content, needle):
    (tmp_path / "model_index.json").write_text(content)
    code, out, err = run(capsys, "info", str(tmp_path))
    assert_one_line_error(code, out, err, str(tmp_path / "model_index.json"), needle)


def test_info_bad_single_config_is_one_line(reg, capsys, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"sample_size": 8}))
    code, out, err = run(capsys, "info", str(tmp_path))
    assert_one_line_error(code, out, err, str(tmp_path / "config.json"), "'_class_name'")


@pytest.mark.parametrize("source", ["no-such-thing", "./missing/folder", "/definitely/not/here"])
def test_info_missing_source_is_one_line(reg, capsys, source):
    code, out, err = run(capsys, "info", source)
    assert_one_line_error(code, out, err, repr(source), "does not exist")


def test_info_folder_that_is_not_a_checkpoint(reg, capsys, tmp_path):
    code, out, err = run(capsys, "info", str(tmp_path))
    assert_one_line_error(code, out, err, str(tmp_path), "has no model_index.json")


def test_info_registered_pretrained_name(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    folder = write_index(tmp_path / "shipped", TOY_INDEX)
    reg.register_plugin(make_plugin(pretrained={"toy-tiny": folder}), dist="diffkit-toy-weights")
    code, out, _ = run(capsys, "info", "toy-tiny")
    assert code == 0
    assert out.splitlines()[0] == "model_index.json of toy-tiny (pretrained, from diffkit-toy-weights)"


def test_info_pretrained_name_wins_over_a_folder_and_may_be_a_callable(reg, capsys, tmp_path, monkeypatch):
    reg.register_plugin(TOY, dist="diffkit-toy")
    shipped = write_index(tmp_path / "shipped", TOY_INDEX)
    write_index(tmp_path / "cwd" / "toy-tiny", {"_class_name": "OtherPipeline"})  # same name as a folder
    monkeypatch.chdir(tmp_path / "cwd")
    reg.register_plugin(make_plugin(pretrained={"toy-tiny": lambda: str(shipped)}), dist="diffkit-toy-weights")
    code, out, _ = run(capsys, "info", "toy-tiny")
    assert code == 0 and "pipeline: ToyPipeline" in out  # what from_pretrained("toy-tiny") would load


def test_info_pretrained_name_pointing_nowhere_is_one_line(reg, capsys, tmp_path):
    reg.register_plugin(make_plugin(pretrained={"gone": tmp_path / "gone"}), dist="diffkit-toy-weights")
    code, out, err = run(capsys, "info", "gone")
    assert_one_line_error(code, out, err, str(tmp_path / "gone"), "does not exist")


def _hub_cache(root: Path, repo_id: str, files: dict[str, Any], commit: str = "a" * 40) -> Path:
    """A Hugging Face cache holding ``files`` of ``repo_id`` at ``main`` (what a download leaves behind)."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, data in files.items():  # a JSON object, or a text file's content
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).write_text(data if isinstance(data, str) else json.dumps(data))
    return root


def test_info_hub_repo_from_the_local_cache(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy", version="1.2.3")
    cache = _hub_cache(tmp_path / "hub", "org/toy", {"model_index.json": TOY_INDEX})
    code, out, _ = run(capsys, "info", "org/toy", "--local-files-only", "--cache-dir", str(cache))
    assert code == 0
    assert out.splitlines()[0] == "model_index.json of org/toy (Hub repo)"
    assert "pipeline: ToyPipeline  ->  diffkit-toy 1.2.3 (pipeline)" in out
    code, out, _ = run(
        capsys, "info", "org/toy", "--local-files-only", "--cache-dir", str(cache), "--revision", "a" * 40
    )
    assert code == 0 and out.splitlines()[0] == f"model_index.json of org/toy (Hub repo, revision {'a' * 40})"


def test_info_hub_repo_with_a_single_model(reg, capsys, tmp_path):
    reg.register_plugin(TOY, dist="diffkit-toy")
    cache = _hub_cache(tmp_path / "hub", "org/unet", {"config.json": {"_class_name": "ToyModel"}})
    code, out, _ = run(capsys, "info", "org/unet", "--local-files-only", "--cache-dir", str(cache))
    assert code == 0 and "class: ToyModel  ->  diffkit-toy (model)" in out


def test_info_hub_repo_not_cached_is_one_line(reg, capsys, tmp_path):
    cache = _hub_cache(tmp_path / "hub", "org/toy", {"model_index.json": TOY_INDEX})
    code, out, err = run(capsys, "info", "org/other", "--local-files-only", "--cache-dir", str(cache))
    assert_one_line_error(code, out, err, "'org/other'", "local Hub cache")
    code, out, err = run(capsys, "info", "org/toy", "--local-files-only", "--cache-dir", str(cache), "--revision", "v9")
    assert_one_line_error(code, out, err, "'org/toy'@v9", "local Hub cache")


def test_info_hub_passes_revision_and_offline_flag(reg, capsys, tmp_path, monkeypatch):
    import huggingface_hub

    calls: list[tuple[str, str, dict[str, Any]]] = []
    target = write_index(tmp_path / "dl", {"_class_name": "ToyPipeline"}) / "model_index.json"

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        calls.append((repo_id, filename, kwargs))
        return str(target)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr("diffkit.hub.hub_unreachable", lambda *args, **kwargs: None)  # the Hub answers
    code, out, _ = run(capsys, "info", "org/toy", "--revision", "v1.0")
    assert code == 1 and "pipeline: ToyPipeline  ->  MISSING" in out
    ((repo_id, filename, kwargs),) = calls
    assert (repo_id, filename, kwargs["revision"]) == ("org/toy", "model_index.json", "v1.0")
    assert kwargs["local_files_only"] is False
    run(capsys, "info", "org/toy", "--local-files-only")
    assert calls[-1][2]["local_files_only"] is True and calls[-1][2]["revision"] is None


def test_info_hub_errors_are_one_line(reg, capsys, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import HFValidationError

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise HFValidationError("Repo id must be in the form 'repo_name'\nsecond line")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    code, out, err = run(capsys, "info", "org/toy")
    assert_one_line_error(code, out, err, "'org/toy' is not a valid Hub repo id")


# -- no torch on these paths ---------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "diffkit.cli", "list"],
        ["-m", "diffkit.cli", "plugins"],
        ["-m", "diffkit", "list", "--available"],
        ["-m", "diffkit", "info", "CKPT"],
    ],
)
def test_cli_commands_do_not_import_torch(tmp_path, argv):
    """Run as a user would, with ``-X importtime`` listing every module imported."""
    write_index(
        tmp_path / "ckpt",
        {
            "_class_name": "DDPMPipeline",
            "unet": ["diffusers", "UNet2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"],
        },
    )
    argv = [str(tmp_path / "ckpt") if a == "CKPT" else a for a in argv]
    env = dict(os.environ)
    env.pop("DIFFKIT_REGISTRY_INDEX", None)
    proc = subprocess.run(
        [PY, "-X", "importtime", *argv], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "diffkit._registry" in imported  # the log is real
    assert "torch" not in imported, [m for m in imported if m.startswith("torch")][:5]
    assert proc.stdout.strip()


def test_import_diffkit_does_not_import_torch():
    code = "import sys, diffkit; from diffkit import cli; print('torch' in sys.modules)"
    proc = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_info_hub_unreachable_is_one_line(reg, capsys, monkeypatch):
    import huggingface_hub

    import importlib.util

    client = "httpx2" if importlib.util.find_spec("httpx2") else "httpx"  # whichever huggingface_hub uses
    httpx = pytest.importorskip(client)

    def fake_download(repo_id: str, filename: str, **kwargs: Any) -> str:
        raise httpx.ConnectError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    code, out, err = run(capsys, "info", "org/toy")
    assert_one_line_error(code, out, err, "reading 'org/toy' from the Hub failed", "Name or service not known")

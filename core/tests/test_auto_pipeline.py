"""AutoPipelineFor{Text2Image,Image2Image,Inpainting}: task and family from the registry, on toy pipelines.

The Stable Diffusion checkpoints (loading, ``from_pipe`` memory, parity) are in
``tests/test_auto_pipeline_stable_diffusion.py``.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from toy_components import ToyModel, ToyPipeline, ToyScheduler  # noqa: E402

from diffkit import PluginError, registry  # noqa: E402
from diffkit.auto_pipeline import (  # noqa: E402
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
    pipeline_for_task,
)
from diffkit.hookspecs import PipelineRole, hookimpl  # noqa: E402
from diffkit.pipeline import Pipeline  # noqa: E402
from diffkit.testing import plugin  # noqa: E402


class ToyImg2ImgPipeline(ToyPipeline):
    pass


class ToyInpaintPipeline(Pipeline):
    """Takes one more required component than the others."""

    optional_components = ("helper",)

    def __init__(self, model: Any, scheduler: Any, masker: Any, helper: Any = None, strength: float = 1.0) -> None:
        super().__init__(model=model, scheduler=scheduler, masker=masker, helper=helper, strength=strength)


class LoneToyPipeline(ToyPipeline):
    pass


def _module(**hooks: Any) -> types.ModuleType:
    module = types.ModuleType("toy_auto_hooks")
    for name, hook in hooks.items():
        setattr(module, name, hook)
    return module


def _hooks(**extra: Any) -> types.ModuleType:
    @hookimpl
    def register_pipelines(register):
        register("ToyPipeline", ToyPipeline, task="text-to-image", family="toy")
        register("ToyImg2ImgPipeline", ToyImg2ImgPipeline, task="image-to-image", family="toy")
        register("ToyInpaintPipeline", ToyInpaintPipeline, task="inpainting", family="toy")
        register("LoneToyPipeline", LoneToyPipeline, task="text-to-image")
        for name, meta in extra.items():
            register(name, ToyPipeline, **meta)

    @hookimpl
    def register_models(register):
        register("ToyModel", ToyModel)

    @hookimpl
    def register_schedulers(register):
        register("ToyScheduler", ToyScheduler)

    return _module(
        register_pipelines=register_pipelines, register_models=register_models, register_schedulers=register_schedulers
    )


@pytest.fixture
def toys(diffkit_registry):
    with plugin(_hooks(), dist="toy-auto"):
        yield


def _pipe(strength: float = 0.5) -> ToyPipeline:
    return ToyPipeline(model=ToyModel(), scheduler=ToyScheduler(), strength=strength)


def test_each_task_maps_within_the_family(toys):
    assert pipeline_for_task("ToyPipeline", "image-to-image").name == "ToyImg2ImgPipeline"
    assert pipeline_for_task("ToyImg2ImgPipeline", "text-to-image").name == "ToyPipeline"
    assert pipeline_for_task("ToyInpaintPipeline", "inpainting").name == "ToyInpaintPipeline"
    assert AutoPipelineForImage2Image.pipeline_class("ToyInpaintPipeline") is ToyImg2ImgPipeline


def test_from_pipe_shares_the_component_objects(toys):
    pipe = _pipe()
    sibling = AutoPipelineForImage2Image.from_pipe(pipe)
    assert type(sibling) is ToyImg2ImgPipeline
    assert sibling.model is pipe.model and sibling.scheduler is pipe.scheduler
    assert sibling.settings == {"strength": 0.5}
    back = AutoPipelineForText2Image.from_pipe(sibling, strength=2.0)
    assert type(back) is ToyPipeline and back.model is pipe.model and back.settings == {"strength": 2.0}


def test_from_pipe_asks_for_what_the_target_needs(toys):
    with pytest.raises(ValueError, match="needs a 'masker' component .* pass masker="):
        AutoPipelineForInpainting.from_pipe(_pipe())
    masker = ToyModel()
    inpaint = AutoPipelineForInpainting.from_pipe(_pipe(), masker=masker)
    assert inpaint.masker is masker
    with pytest.raises(TypeError, match="takes no colour"):
        AutoPipelineForImage2Image.from_pipe(_pipe(), colour="red")


def test_unmapped_pipelines_say_why(toys):
    with pytest.raises(ValueError, match="LoneToyPipeline .* declares no family"):
        AutoPipelineForImage2Image.from_pipe(LoneToyPipeline(model=ToyModel(), scheduler=ToyScheduler()))
    with pytest.raises(LookupError):
        pipeline_for_task("NoSuchPipeline", "inpainting")


def test_a_task_missing_from_the_family_lists_the_family(diffkit_registry):
    @hookimpl
    def register_pipelines(register):
        register("ToyPipeline", ToyPipeline, task="text-to-image", family="toy")

    with plugin(_module(register_pipelines=register_pipelines), dist="toy-one"):
        with pytest.raises(ValueError, match="no installed pipeline does inpainting for the 'toy' family .*ToyPipeline"):
            pipeline_for_task("ToyPipeline", "inpainting")


def test_two_pipelines_for_one_task_is_an_error(diffkit_registry):
    with plugin(_hooks(OtherToyImg2Img={"task": "image-to-image", "family": "toy"}), dist="toy-auto"):
        with pytest.raises(ValueError, match="more than one .*OtherToyImg2Img.*ToyImg2ImgPipeline"):
            pipeline_for_task("ToyPipeline", "image-to-image")


@pytest.mark.parametrize(
    ("meta", "message"),
    [({"task": "Image 2 Image"}, "task='Image 2 Image'"), ({"family": 3}, "family=3"), ({"tasks": "x"}, "'tasks'")],
)
def test_bad_task_or_family_fails_the_plugin_naming_it(diffkit_registry, monkeypatch, meta, message):
    monkeypatch.setenv("DIFFKIT_STRICT_PLUGINS", "1")

    @hookimpl
    def register_pipelines(register):
        register("BadToyPipeline", ToyPipeline, **meta)

    with pytest.raises(PluginError, match=message):
        with plugin(_module(register_pipelines=register_pipelines), dist="toy-bad"):
            registry.names("pipeline")


def test_role_reads_registration_keywords():
    assert PipelineRole.from_meta("X", "d", {"task": "inpainting", "family": "stable-diffusion-xl"}) == PipelineRole(
        "inpainting", "stable-diffusion-xl"
    )
    assert PipelineRole.from_meta("X", "d", {}) == PipelineRole()


def test_from_pretrained_reads_the_checkpoint_class_and_loads_the_task_class(toys, tmp_path):
    folder = tmp_path / "toy"
    _pipe(0.25).save_pretrained(folder)
    loaded = AutoPipelineForImage2Image.from_pretrained(folder)
    assert type(loaded) is ToyImg2ImgPipeline and loaded.settings == {"strength": 0.25}
    assert type(AutoPipelineForText2Image.from_pretrained(str(folder))) is ToyPipeline
    with pytest.raises(Exception, match="not an existing folder"):
        AutoPipelineForText2Image.from_pretrained(tmp_path / "missing")


def test_auto_pipelines_are_not_built_directly_and_import_without_torch():
    with pytest.raises(TypeError, match="from_pretrained"):
        AutoPipelineForText2Image()
    code = "import sys, diffkit; diffkit.AutoPipelineForInpainting; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_diffkit_list_shows_task_and_family(toys, capsys):
    import json

    from diffkit import cli

    assert cli.main(["list", "pipelines"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert lines["ToyImg2ImgPipeline"].endswith("[image-to-image, toy]")
    assert lines["LoneToyPipeline"].endswith("[text-to-image]")
    assert cli.main(["list", "pipelines", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["pipelines"]}
    assert (rows["ToyInpaintPipeline"]["task"], rows["ToyInpaintPipeline"]["family"]) == ("inpainting", "toy")
    assert "family" not in rows["LoneToyPipeline"]

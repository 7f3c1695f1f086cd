"""from_pretrained / save_pretrained of pipelines and models on toy components."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from diffkit import CheckpointError, ComponentNotFoundError, DiffusionPipeline, registry
from diffkit.testing import plugin

sys.path.insert(0, str(Path(__file__).parent))
from toy_components import ToyModel, ToyPipeline, ToyScheduler, hook_module  # noqa: E402


@pytest.fixture
def toys(diffkit_registry):
    with plugin(hook_module(), dist="diffkit-toys"):
        yield


@pytest.fixture
def checkpoint(toys, tmp_path):
    torch.manual_seed(0)
    pipe = ToyPipeline(model=ToyModel(features=4), scheduler=ToyScheduler(num_train_timesteps=7), strength=0.5)
    path = tmp_path / "toy"
    pipe.save_pretrained(path)
    return pipe, path


def test_save_layout_is_the_diffusers_one(checkpoint):
    _, path = checkpoint
    index = json.loads((path / "model_index.json").read_text())
    assert index["_class_name"] == "ToyPipeline"
    assert index["model"] == ["diffusers", "ToyModel"]
    assert index["scheduler"] == ["diffusers", "ToyScheduler"]
    assert index["helper"] == [None, None]
    assert index["strength"] == 0.5
    assert (path / "model" / "config.json").is_file()
    assert (path / "model" / "diffusion_pytorch_model.safetensors").is_file()
    assert (path / "scheduler" / "scheduler_config.json").is_file()


def test_round_trip_gives_the_same_outputs(checkpoint):
    pipe, path = checkpoint
    loaded = DiffusionPipeline.from_pretrained(path)
    assert type(loaded) is ToyPipeline
    assert loaded.settings == {"strength": 0.5}
    assert loaded.scheduler.config.num_train_timesteps == 7
    x = torch.randn(2, 4)
    torch.testing.assert_close(loaded(x), pipe(x), rtol=0, atol=0)
    assert loaded.name_or_path == str(path)


def test_concrete_class_and_overrides(checkpoint):
    _, path = checkpoint
    other = ToyScheduler(num_train_timesteps=3)
    pipe = ToyPipeline.from_pretrained(path, scheduler=other, strength=2.0)
    assert pipe.scheduler is other and pipe.settings["strength"] == 2.0
    sibling = type(pipe)(**pipe.components)
    assert sibling.model is pipe.model  # no weights copied


def test_component_assignment_and_kind_check(checkpoint):
    _, path = checkpoint
    pipe = DiffusionPipeline.from_pretrained(path)
    new = ToyScheduler(num_train_timesteps=2)
    pipe.scheduler = new
    assert pipe.components["scheduler"] is new
    with pytest.raises(TypeError, match="must be a Scheduler"):
        pipe.scheduler = ToyModel()


def test_torch_dtype_forms(checkpoint):
    _, path = checkpoint
    assert DiffusionPipeline.from_pretrained(path, torch_dtype=torch.float16).model.dtype == torch.float16
    assert DiffusionPipeline.from_pretrained(path, torch_dtype="bfloat16").dtype == torch.bfloat16
    by_name = DiffusionPipeline.from_pretrained(path, torch_dtype={"model": torch.float16, "default": torch.float32})
    assert by_name.model.dtype == torch.float16
    assert DiffusionPipeline.from_pretrained(path, torch_dtype={"default": torch.bfloat16}).model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="torch_dtype='float17' is not a dtype"):
        DiffusionPipeline.from_pretrained(path, torch_dtype="float17")


def test_auto_dtype_uses_the_checkpoint_dtype(toys, tmp_path):
    ToyPipeline(model=ToyModel().to(torch.float16), scheduler=ToyScheduler()).save_pretrained(tmp_path / "h")
    assert DiffusionPipeline.from_pretrained(tmp_path / "h", torch_dtype="auto").model.dtype == torch.float16
    assert DiffusionPipeline.from_pretrained(tmp_path / "h").model.dtype == torch.float32


def test_variants_and_fallback(toys, tmp_path):
    torch.manual_seed(1)
    pipe = ToyPipeline(model=ToyModel(), scheduler=ToyScheduler())
    pipe.save_pretrained(tmp_path / "v")
    half = ToyPipeline(model=ToyModel().half(), scheduler=ToyScheduler())
    half.save_pretrained(tmp_path / "h", variant="fp16")
    (tmp_path / "v" / "model" / "diffusion_pytorch_model.fp16.safetensors").write_bytes(
        (tmp_path / "h" / "model" / "diffusion_pytorch_model.fp16.safetensors").read_bytes()
    )
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "v", variant="fp16", torch_dtype=torch.float16)
    torch.testing.assert_close(loaded.model.proj.weight, half.model.proj.weight)
    with pytest.raises(CheckpointError, match="variant 'bf16' was requested but no component folder"):
        DiffusionPipeline.from_pretrained(tmp_path / "v", variant="bf16")


def test_sharded_weights(toys, tmp_path):
    torch.manual_seed(2)
    model = ToyModel(features=16)
    model.save_pretrained(tmp_path / "m", max_shard_size=600)
    files = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert "diffusion_pytorch_model.safetensors.index.json" in files
    assert any("-00001-of-" in f for f in files)
    loaded = ToyModel.from_pretrained(tmp_path / "m")
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, rtol=0, atol=0)


def test_pickle_needs_explicit_opt_in(toys, tmp_path):
    model = ToyModel()
    model.save_pretrained(tmp_path / "p", safe_serialization=False)
    assert (tmp_path / "p" / "diffusion_pytorch_model.bin").is_file()
    with pytest.raises(CheckpointError, match="only pickle weights.*use_safetensors=False, allow_pickle=True"):
        ToyModel.from_pretrained(tmp_path / "p")
    with pytest.raises(CheckpointError, match="only pickle weights"):
        ToyModel.from_pretrained(tmp_path / "p", use_safetensors=False)
    loaded = ToyModel.from_pretrained(tmp_path / "p", use_safetensors=False, allow_pickle=True)
    torch.testing.assert_close(loaded.proj.weight, model.proj.weight)


def test_model_subfolder_and_loading_info(checkpoint):
    pipe, path = checkpoint
    model, info = ToyModel.from_pretrained(path, subfolder="model", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    torch.testing.assert_close(model.proj.weight, pipe.model.proj.weight)
    with pytest.raises(CheckpointError, match="has no subfolder 'vae'"):
        ToyModel.from_pretrained(path, subfolder="vae")


def test_optional_component_none_and_required_missing(checkpoint):
    _, path = checkpoint
    assert DiffusionPipeline.from_pretrained(path).helper is None
    index = json.loads((path / "model_index.json").read_text())
    index["scheduler"] = [None, None]
    (path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"'scheduler' is \[null, null\] but ToyPipeline requires it"):
        DiffusionPipeline.from_pretrained(path)
    pipe = DiffusionPipeline.from_pretrained(path, scheduler=ToyScheduler())
    assert isinstance(pipe.scheduler, ToyScheduler)


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        ("{ not json", "model_index.json .* is not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"model": ["diffusers", "ToyModel"]}', "'_class_name' is missing"),
        ('{"_class_name": "ToyPipeline", "../evil": ["diffusers", "ToyModel"]}', "'../evil' is not a plain identifier"),
        ('{"_class_name": "ToyPipeline", "a/b": ["diffusers", "ToyModel"]}', "'a/b' is not a plain identifier"),
        ('{"_class_name": "ToyPipeline", "model": ["diffusers", null]}', r"must be \[library, ClassName\]"),
        ('{"_class_name": "ToyPipeline", "model": ["../x", "ToyModel"]}', r"entry 'model' must be \[library, ClassName\]"),
    ],
)
def test_malformed_model_index(toys, tmp_path, content, message):
    (tmp_path / "model_index.json").write_text(content)
    with pytest.raises(CheckpointError, match=message):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_missing_subfolder_and_weight_file(checkpoint):
    _, path = checkpoint
    (path / "model" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weight file diffusion_pytorch_model.safetensors in .*model"):
        DiffusionPipeline.from_pretrained(path)
    import shutil

    shutil.rmtree(path / "model")
    with pytest.raises(CheckpointError, match="declares component 'model' but the folder .* does not exist"):
        DiffusionPipeline.from_pretrained(path)


def test_truncated_safetensors(checkpoint):
    _, path = checkpoint
    weights = path / "model" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors cannot be read"):
        DiffusionPipeline.from_pretrained(path)


def test_shape_disagreeing_with_config(checkpoint):
    _, path = checkpoint
    config = json.loads((path / "model" / "config.json").read_text())
    config["features"] = 5
    (path / "model" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"tensor 'proj.weight' has shape \(4, 4\) but ToyModel .* expects \(5, 5\)"):
        DiffusionPipeline.from_pretrained(path)


def test_class_no_plugin_provides(checkpoint):
    _, path = checkpoint
    index = json.loads((path / "model_index.json").read_text())
    index["model"] = ["diffusers", "ToyModell"]
    (path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ComponentNotFoundError, match="model 'ToyModell' .*Did you mean 'ToyModel'"):
        DiffusionPipeline.from_pretrained(path)
    index["_class_name"] = "NoSuchPipeline"
    (path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ComponentNotFoundError, match="pipeline 'NoSuchPipeline' \\(model_index.json in"):
        DiffusionPipeline.from_pretrained(path)


def test_library_without_loader_is_never_imported(checkpoint):
    _, path = checkpoint
    index = json.loads((path / "model_index.json").read_text())
    index["model"] = ["os", "system"]
    (path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ComponentNotFoundError, match="component_loader 'os'"):
        DiffusionPipeline.from_pretrained(path)


def test_source_that_is_neither_folder_nor_repo(toys):
    with pytest.raises(CheckpointError, match="not an existing folder, a Hub repo id"):
        DiffusionPipeline.from_pretrained("no/such/thing/../x")


def test_interrupted_save_leaves_existing_checkpoint_intact(checkpoint, monkeypatch):
    pipe, path = checkpoint
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    def explode(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(ToyScheduler, "save_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        ToyPipeline(model=ToyModel(features=8), scheduler=ToyScheduler()).save_pretrained(path)
    after = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    assert after == before
    assert [p.name for p in path.parent.iterdir()] == ["toy"]  # no partial folder left behind
    assert isinstance(DiffusionPipeline.from_pretrained(path), ToyPipeline)


def test_pipeline_loaded_hook_fires(checkpoint):
    from diffkit.hookspecs import hookimpl

    _, path = checkpoint
    seen = []

    class Watcher:
        @hookimpl
        def pipeline_loaded(self, pipeline, source):
            seen.append((type(pipeline).__name__, source))

    with plugin(Watcher(), dist="diffkit-watcher"):
        DiffusionPipeline.from_pretrained(path)
    assert seen == [("ToyPipeline", str(path))]


def test_to_device_and_dtype(checkpoint):
    _, path = checkpoint
    pipe = DiffusionPipeline.from_pretrained(path)
    assert pipe.to(torch.float64) is pipe and pipe.dtype == torch.float64
    pipe.to("cpu", torch.float32)
    assert pipe.device == torch.device("cpu") and pipe.dtype == torch.float32
    with pytest.raises(ValueError, match="the device comes first"):
        pipe.to(torch.float32, "cpu")


def test_registered_pretrained_name(toys, tmp_path):
    from diffkit.hookspecs import hookimpl

    ToyPipeline(model=ToyModel(), scheduler=ToyScheduler()).save_pretrained(tmp_path / "shipped")

    class Shipper:
        @hookimpl
        def register_pretrained(self, register):
            register("diffkit/toy-demo", tmp_path / "shipped")  # objects are allowed in-process

    with plugin(Shipper(), dist="diffkit-shipper"):
        assert registry.names("pretrained") == ["diffkit/toy-demo"]
        assert isinstance(DiffusionPipeline.from_pretrained("diffkit/toy-demo"), ToyPipeline)


def test_loading_skips_random_init_in_its_own_thread_only(checkpoint, monkeypatch):
    """Model loading builds on meta without running torch.nn.init; a model built meanwhile elsewhere is initialised."""
    import threading

    from diffkit import model as model_module

    entered, release = threading.Event(), threading.Event()
    real_mode = model_module._SkipInit

    class PausingSkipInit(real_mode):
        def __enter__(self):
            result = super().__enter__()
            entered.set()
            release.wait(10)
            return result

    calls: list[str] = []  # threads in which a random initialisation drew numbers
    real_uniform = torch.Tensor.uniform_

    def counting_uniform(self, *args, **kwargs):
        calls.append(threading.current_thread().name)
        return real_uniform(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "uniform_", counting_uniform)
    monkeypatch.setattr(model_module, "_SkipInit", PausingSkipInit)
    loaded: list[Any] = []
    pipe, path = checkpoint
    loader = threading.Thread(target=lambda: loaded.append(ToyModel.from_pretrained(path / "model")), name="loader")
    loader.start()
    assert entered.wait(10)
    torch.manual_seed(0)
    elsewhere = torch.nn.Linear(4, 4)  # built while the loader thread is inside the mode
    release.set()
    loader.join(10)
    torch.manual_seed(0)
    assert torch.equal(elsewhere.weight, torch.nn.Linear(4, 4).weight)
    assert calls and "loader" not in calls  # initialisers ran here, never in the loading thread
    expected = pipe.model.state_dict()
    assert all(torch.equal(loaded[0].state_dict()[k], v) for k, v in expected.items())

"""Pipelines with ``transformers`` components and a diffusers pipeline-module component
(``["stable_diffusion", "StableDiffusionSafetyChecker"]``): loading, dtypes, saving, and the
error when the loader plugin is missing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

import diffkit.testing
from diffkit import CheckpointError, ComponentNotFoundError, DiffusionPipeline, registry

transformers = pytest.importorskip("transformers")
from diffkit_models_safety_checker import StableDiffusionSafetyChecker  # noqa: E402


class TextToyPipeline(DiffusionPipeline):
    """Only components: enough to see what loading and saving do with each library."""

    optional_components = ("safety_checker", "feature_extractor")

    def __init__(self, text_encoder, tokenizer, safety_checker=None, feature_extractor=None):
        super().__init__(text_encoder=text_encoder, tokenizer=tokenizer, safety_checker=safety_checker,
                         feature_extractor=feature_extractor)

    def __call__(self):
        raise NotImplementedError("a loading fixture, not a pipeline to run")


INDEX = {
    "_class_name": "TextToyPipeline",
    "_diffusers_version": "0.42.1",
    "text_encoder": ["transformers", "CLIPTextModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"],
    "feature_extractor": ["transformers", "CLIPFeatureExtractor"],
}
TINY_CHECKER = {"projection_dim": 4, "vision_config": {"hidden_size": 8, "intermediate_size": 12,
                                                       "num_hidden_layers": 1, "num_attention_heads": 2,
                                                       "image_size": 8, "patch_size": 4}}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A folder laid out as diffusers writes one (SD 1.x names its feature extractor CLIPFeatureExtractor)."""
    root = tmp_path_factory.mktemp("text_toy")
    torch.manual_seed(0)
    config = transformers.CLIPTextConfig(vocab_size=700, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                         num_attention_heads=2, max_position_embeddings=20)
    transformers.CLIPTextModel(config).save_pretrained(root / "text_encoder")
    diffkit.testing.write_clip_tokenizer_files(root / "tokenizer", model_max_length=20)
    StableDiffusionSafetyChecker(TINY_CHECKER).save_pretrained(root / "safety_checker")
    transformers.CLIPImageProcessor(size={"shortest_edge": 8}, crop_size=8).save_pretrained(root / "feature_extractor")
    (root / "model_index.json").write_text(json.dumps(INDEX))
    return root


def test_loads_each_library_with_per_component_dtypes(checkpoint):
    pipe = TextToyPipeline.from_pretrained(checkpoint, torch_dtype={"text_encoder": torch.float16,
                                                                    "default": torch.bfloat16})
    assert type(pipe.text_encoder) is transformers.CLIPTextModel and pipe.text_encoder.dtype == torch.float16
    assert isinstance(pipe.tokenizer, transformers.CLIPTokenizer) and pipe.tokenizer.model_max_length == 20
    assert type(pipe.safety_checker) is StableDiffusionSafetyChecker and pipe.safety_checker.dtype == torch.bfloat16
    assert isinstance(pipe.feature_extractor, transformers.CLIPImageProcessor)
    plain = TextToyPipeline.from_pretrained(checkpoint)
    assert plain.text_encoder.dtype == torch.float32 and plain.safety_checker.dtype == torch.float32


def test_save_writes_the_pairs_diffusers_reads(checkpoint, tmp_path):
    pipe = TextToyPipeline.from_pretrained(checkpoint)
    pipe.save_pretrained(tmp_path / "saved")
    index = json.loads((tmp_path / "saved" / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["safety_checker"] == ["stable_diffusion", "StableDiffusionSafetyChecker"]
    assert index["feature_extractor"] == ["transformers", "CLIPImageProcessor"]
    again = TextToyPipeline.from_pretrained(tmp_path / "saved")
    ids = pipe.tokenizer("a photo of a cat", return_tensors="pt").input_ids
    assert torch.equal(again.text_encoder(ids).last_hidden_state, pipe.text_encoder(ids).last_hidden_state)
    for key, value in pipe.safety_checker.state_dict().items():
        assert torch.equal(again.safety_checker.state_dict()[key], value)


def test_pipeline_module_class_not_installed_names_its_package(checkpoint, diffkit_registry):
    """Without the safety-checker plugin, its entry asks for the package that provides the class."""
    from diffkit_loader_transformers import hooks

    with diffkit.testing.plugin(hooks, dist="diffkit-loader-transformers"), pytest.raises(ComponentNotFoundError, match=r"(?s)model 'StableDiffusionSafetyChecker' "
                                                     r"\(component 'safety_checker'.*pip install (-U )?"
                                                     r"diffkit-models-safety-checker"):
        TextToyPipeline.from_pretrained(checkpoint)


def test_unknown_lowercase_library_is_still_a_missing_loader(checkpoint, tmp_path):
    index = {**INDEX, "safety_checker": ["my_lib", "NoSuchThing"]}
    folder = tmp_path / "copy"
    folder.mkdir()
    for name in ("text_encoder", "tokenizer", "safety_checker", "feature_extractor"):
        shutil.copytree(checkpoint / name, folder / name)
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ComponentNotFoundError, match="component_loader 'my_lib'"):
        TextToyPipeline.from_pretrained(folder)


def test_a_transformers_class_the_loader_does_not_know(checkpoint, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    for name in ("text_encoder", "tokenizer"):
        shutil.copytree(checkpoint / name, folder / name)
    (folder / "model_index.json").write_text(json.dumps(
        {"_class_name": "TextToyPipeline", "text_encoder": ["transformers", "os"],
         "tokenizer": ["transformers", "CLIPTokenizer"]}))
    with pytest.raises(CheckpointError, match="the 'transformers' loader does not know class 'os'"):
        TextToyPipeline.from_pretrained(folder)


def test_disabled_loader_plugin_says_so(checkpoint, monkeypatch):
    monkeypatch.setenv("DIFFKIT_DISABLE_PLUGINS", "diffkit-loader-transformers")
    with registry.isolated(autoload=True), pytest.raises(
            ComponentNotFoundError, match=r"(?s)component_loader 'transformers'.*disabled by DIFFKIT_DISABLE_PLUGINS"):
        TextToyPipeline.from_pretrained(checkpoint)


def test_missing_loader_plugin_gives_the_pip_command(checkpoint, diffkit_registry, monkeypatch):
    import diffkit._index

    real = diffkit._index.installed_version
    monkeypatch.setattr(diffkit._index, "installed_version",
                        lambda dist: None if dist == "diffkit-loader-transformers" else real(dist))
    with pytest.raises(ComponentNotFoundError) as caught:
        TextToyPipeline.from_pretrained(checkpoint)
    message = str(caught.value)
    assert "component_loader 'transformers'" in message
    assert f"{sys.executable} -m pip install diffkit-loader-transformers" in message


def test_cli_info_finds_the_pipeline_module_component(checkpoint, capsys):
    from diffkit import cli

    with registry.isolated(autoload=True):
        cli.main(["info", str(checkpoint)])
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("safety_checker"))
    assert "stable_diffusion" in row and "diffkit-models-safety-checker" in row and "MISSING" not in row
    assert "component_loader 'stable_diffusion'" not in out


def test_hub_download_fetches_only_the_files_loading_reads(checkpoint, hub_server, tmp_path):
    source = tmp_path / "repo"
    shutil.copytree(checkpoint, source)
    encoder = transformers.CLIPTextModel.from_pretrained(checkpoint / "text_encoder")
    transformers.CLIPTextModel.from_pretrained(checkpoint / "text_encoder").half().save_pretrained(
        tmp_path / "half", variant="fp16")
    shutil.copy(tmp_path / "half" / "model.fp16.safetensors", source / "text_encoder")
    (source / "text_encoder" / "pytorch_model.bin").write_bytes(b"not read: pickle needs the opt-in")
    (source / "text_encoder" / "tf_model.h5").write_bytes(b"another framework")
    hub_server.add_commit("org/text-toy", source)
    everything = {p.relative_to(source).as_posix() for p in source.rglob("*") if p.is_file()}
    skipped = {"text_encoder/pytorch_model.bin", "text_encoder/tf_model.h5"}

    pipe = TextToyPipeline.from_pretrained("org/text-toy")
    assert hub_server.downloaded() == everything - skipped - {"text_encoder/model.fp16.safetensors"}
    ids = pipe.tokenizer("a photo of a cat", return_tensors="pt").input_ids
    assert torch.equal(pipe.text_encoder(ids).last_hidden_state, encoder(ids).last_hidden_state)

    hub_server.clear()
    half = TextToyPipeline.from_pretrained("org/text-toy", variant="fp16", torch_dtype=torch.float16)
    assert hub_server.downloaded() == {"text_encoder/model.fp16.safetensors"}  # the rest is cached
    assert half.text_encoder.dtype == torch.float16

"""``TransformersLoader``: class resolution, weight-file rules, dtypes, variants, saving."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import diffkit.testing
from diffkit import CheckpointError
from diffkit_loader_transformers import hooks
from diffkit_loader_transformers.files import files_needed, is_weight_file
from diffkit_loader_transformers.loader import TransformersLoader

transformers = pytest.importorskip("transformers")

DIST = "diffkit-loader-transformers"
IDS = torch.tensor([[0, 5, 9, 13, 2, 2, 2], [0, 7, 2, 2, 2, 2, 2]])


def tiny_text_config(**overrides):
    values = dict(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
                  max_position_embeddings=16, projection_dim=8, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    values.update(overrides)
    return transformers.CLIPTextConfig(**values)


@pytest.fixture
def text_encoder():
    torch.manual_seed(0)
    return transformers.CLIPTextModel(tiny_text_config()).eval()


@pytest.fixture
def loader():
    return TransformersLoader()


def test_hook_registers_the_loader(diffkit_registry):
    with diffkit.testing.plugin(hooks, dist=DIST):
        assert diffkit_registry.names("component_loader") == ["transformers"]
        assert diffkit_registry.get("component_loader", "transformers") is TransformersLoader


def test_hook_module_and_package_import_no_torch_or_transformers():
    code = ("import sys, diffkit_loader_transformers, diffkit_loader_transformers.hooks; "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("name", ["CLIPTextModel", "CLIPTextModelWithProjection", "CLIPTokenizer",
                                  "CLIPTokenizerFast", "CLIPVisionModelWithProjection", "CLIPImageProcessor",
                                  "CLIPFeatureExtractor", "T5EncoderModel", "T5TokenizerFast"])
def test_can_load_transformers_classes(loader, name):
    assert loader.can_load(name)


@pytest.mark.parametrize("name", ["os", "logging", "is_torch_available", "__builtins__", "_LazyModule",
                                  "NoSuchModel", "os.path", "subprocess:run", ""])
def test_refuses_what_is_not_a_transformers_class(loader, name):
    assert not loader.can_load(name)
    with pytest.raises(CheckpointError):
        loader.load(name, Path("."))


def save_v5(model, folder: Path) -> Path:
    """What transformers 5 writes for a freshly built model: no ``text_model.`` prefix."""
    model.save_pretrained(folder)
    assert not any(k.startswith("text_model.") for k in load_file(folder / "model.safetensors"))
    return folder


def save_v4(model, folder: Path) -> Path:
    """The transformers-4 layout of real SD checkpoints, written by hand: keys ``text_model.*``."""
    folder.mkdir(parents=True)
    model.config.save_pretrained(folder)
    state = {f"text_model.{k}": v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_both_layouts_load_with_identical_outputs(loader, text_encoder, tmp_path):
    expected = text_encoder(IDS)
    for folder in (save_v5(text_encoder, tmp_path / "v5"), save_v4(text_encoder, tmp_path / "v4")):
        got = loader.load("CLIPTextModel", folder)
        assert not got.training
        out = got(IDS)
        assert torch.equal(out.last_hidden_state, expected.last_hidden_state)
        assert torch.equal(out.pooler_output, expected.pooler_output)


def test_save_writes_the_prefixed_layout_that_both_versions_read(loader, text_encoder, tmp_path):
    loader.save(text_encoder, tmp_path / "saved")
    keys = set(load_file(tmp_path / "saved" / "model.safetensors"))
    assert keys == {f"text_model.{k}" for k in text_encoder.state_dict()}
    again = transformers.CLIPTextModel.from_pretrained(tmp_path / "saved", local_files_only=True)
    assert torch.equal(again(IDS).last_hidden_state, text_encoder(IDS).last_hidden_state)
    # a model loaded from the prefixed layout (transformers 5 then saves it prefixed itself): no double prefix
    loader.save(loader.load("CLIPTextModel", tmp_path / "saved"), tmp_path / "resaved")
    assert set(load_file(tmp_path / "resaved" / "model.safetensors")) == keys


def test_save_sharded_with_variant(loader, text_encoder, tmp_path):
    folder = tmp_path / "sharded"
    loader.save(text_encoder, folder, variant="fp16", max_shard_size="20KB")
    index = json.loads((folder / "model.safetensors.index.fp16.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    assert all(k.startswith("text_model.") for k in index["weight_map"])
    for shard in set(index["weight_map"].values()):
        assert all(k.startswith("text_model.") for k in load_file(folder / shard))
    got = loader.load("CLIPTextModel", folder, variant="fp16")
    assert torch.equal(got(IDS).last_hidden_state, text_encoder(IDS).last_hidden_state)
    with pytest.raises(CheckpointError, match=r"no weight file model\.safetensors in .*sharded"):
        loader.load("CLIPTextModel", folder)


def test_pickle_only_on_the_opt_in(loader, text_encoder, tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    text_encoder.config.save_pretrained(folder)
    torch.save(text_encoder.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pickled.* only pickle weights \(pytorch_model\.bin\).*"
                                              r"use_safetensors=False, allow_pickle=True"):
        loader.load("CLIPTextModel", folder)
    with pytest.raises(CheckpointError, match="allow_pickle=True"):
        loader.load("CLIPTextModel", folder, use_safetensors=False)
    got = loader.load("CLIPTextModel", folder, use_safetensors=False, allow_pickle=True)
    assert torch.equal(got(IDS).last_hidden_state, text_encoder(IDS).last_hidden_state)


def test_safetensors_wins_over_a_pickle_beside_it(loader, text_encoder, tmp_path):
    folder = save_v5(text_encoder, tmp_path / "both")
    other = {k: torch.zeros_like(v) for k, v in text_encoder.state_dict().items()}
    torch.save(other, folder / "pytorch_model.bin")
    got = loader.load("CLIPTextModel", folder, allow_pickle=True)
    assert torch.equal(got(IDS).last_hidden_state, text_encoder(IDS).last_hidden_state)
    zeros = loader.load("CLIPTextModel", folder, use_safetensors=False, allow_pickle=True)
    assert all(torch.count_nonzero(p) == 0 for p in zeros.parameters())


def test_dtypes(loader, text_encoder, tmp_path):
    folder = tmp_path / "half"
    text_encoder.half().save_pretrained(folder)
    assert loader.load("CLIPTextModel", folder).dtype == torch.float32  # like every diffkit model
    assert loader.load("CLIPTextModel", folder, torch_dtype="auto").dtype == torch.float16
    assert loader.load("CLIPTextModel", folder, torch_dtype=torch.bfloat16).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="torch_dtype='int3'"):
        loader.load("CLIPTextModel", folder, torch_dtype="int3")


def test_missing_config_and_weights_name_the_folder(loader, text_encoder, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="empty has no config.json"):
        loader.load("CLIPTextModel", empty)
    text_encoder.config.save_pretrained(empty)
    with pytest.raises(CheckpointError, match=r"no weight file model\.safetensors in .*empty"):
        loader.load("CLIPTextModel", empty)
    with pytest.raises(CheckpointError, match="does not exist"):
        loader.load("CLIPTextModel", tmp_path / "nowhere")


@pytest.mark.parametrize("cls_name", ["CLIPTextModelWithProjection", "CLIPVisionModelWithProjection",
                                      "CLIPVisionModel", "T5EncoderModel"])
def test_other_models_round_trip(loader, tmp_path, cls_name):
    torch.manual_seed(0)
    if cls_name.startswith("CLIPText"):
        model, inputs = transformers.CLIPTextModelWithProjection(tiny_text_config()), {"input_ids": IDS}
    elif cls_name.startswith("CLIPVision"):
        config = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=8, patch_size=4, projection_dim=8)
        model = getattr(transformers, cls_name)(config)
        inputs = {"pixel_values": torch.randn(2, 3, 8, 8)}
    else:
        config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=24, num_layers=2, num_heads=2)
        model, inputs = transformers.T5EncoderModel(config), {"input_ids": IDS}
    model.eval()
    loader.save(model, tmp_path / "saved")
    assert loader.owns(model)
    got = loader.load(cls_name, tmp_path / "saved")
    assert type(got) is type(model)
    expected, out = model(**inputs), got(**inputs)
    assert torch.equal(out.last_hidden_state, expected.last_hidden_state)
    if cls_name == "CLIPVisionModel":  # saved in the transformers-4 layout, like CLIPTextModel
        assert all(k.startswith("vision_model.") for k in load_file(tmp_path / "saved" / "model.safetensors"))
    again = getattr(transformers, cls_name).from_pretrained(tmp_path / "saved", local_files_only=True)
    assert torch.equal(again(**inputs).last_hidden_state, expected.last_hidden_state)


@pytest.mark.parametrize("cls_name", ["CLIPTokenizer", "CLIPTokenizerFast"])
def test_tokenizers(loader, tmp_path, cls_name):
    folder = diffkit.testing.write_clip_tokenizer_files(tmp_path / "tok", model_max_length=20)
    tokenizer = loader.load(cls_name, folder)
    assert tokenizer.model_max_length == 20
    assert loader.owns(tokenizer)
    loader.save(tokenizer, tmp_path / "saved")
    again = loader.load(cls_name, tmp_path / "saved")
    assert again("a photo of a cat").input_ids == tokenizer("a photo of a cat").input_ids
    (folder / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer folder .*tok lacks its vocabulary.*missing: vocab\.json"):
        loader.load(cls_name, folder)


@pytest.mark.parametrize("name", ["CLIPImageProcessor", "CLIPFeatureExtractor"])
def test_image_processor(loader, tmp_path, name):
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 8}, crop_size={"height": 8, "width": 8})
    processor.save_pretrained(tmp_path)
    got = loader.load(name, tmp_path)
    assert isinstance(got, transformers.CLIPImageProcessor) and got.crop_size == {"height": 8, "width": 8}
    assert loader.owns(got)
    image = torch.rand(3, 12, 10)
    assert torch.equal(got(image, return_tensors="pt").pixel_values, processor(image, return_tensors="pt").pixel_values)


def test_owns_only_transformers_objects(loader):
    assert not loader.owns(torch.nn.Linear(2, 2))
    assert not loader.owns(object())


def test_files_needed_picks_one_format_and_variant():
    names = {"config.json", "model.safetensors", "model.fp16.safetensors", "pytorch_model.bin", "tf_model.h5",
             "flax_model.msgpack", "model.onnx", "vocab.json", "merges.txt", "pytorch_model.bin.index.json"}
    assert files_needed(names, None, None, False) == ["config.json", "merges.txt", "vocab.json", "model.safetensors"]
    assert files_needed(names, "fp16", None, False)[-1] == "model.fp16.safetensors"
    assert files_needed(names, "bf16", None, False)[-1] == "model.safetensors"  # variant absent: default weights
    assert files_needed(names - {"model.safetensors", "model.fp16.safetensors"}, None, None, False) == [
        "config.json", "merges.txt", "vocab.json"]
    unsharded = names - {"pytorch_model.bin.index.json"}
    assert files_needed(unsharded, None, False, True)[-1] == "pytorch_model.bin"
    assert files_needed(unsharded, None, None, True)[-1] == "model.safetensors"
    assert files_needed(unsharded - {"model.safetensors"}, None, None, True)[-1] == "pytorch_model.bin"
    sharded = {"config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
               "model-00002-of-00002.safetensors", "pytorch_model-00001-of-00002.bin"}
    assert files_needed(sharded, None, None, False) == [
        "config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors"]
    assert is_weight_file("model.safetensors.index.fp16.json") and not is_weight_file("tokenizer_config.json")


def test_without_transformers_the_core_works_and_loading_says_what_to_install(tmp_path):
    """transformers hidden: the registry, the safety checker and diffkit itself still import."""
    code = (
        "import sys; sys.modules['transformers'] = None\n"
        "from diffkit import registry, CheckpointError\n"
        "assert 'transformers' in registry.names('component_loader')\n"
        "registry.get('model', 'StableDiffusionSafetyChecker')\n"
        "loader = registry.get('component_loader', 'transformers')()\n"
        "for call in (lambda: loader.load('CLIPTextModel', sys.argv[1]), lambda: loader.can_load('CLIPTextModel')):\n"
        "    try:\n        call()\n    except CheckpointError as exc:\n        print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True,
                         check=True).stdout
    assert out.count("need the transformers package") == 2 and "pip install 'transformers>=4.40'" in out

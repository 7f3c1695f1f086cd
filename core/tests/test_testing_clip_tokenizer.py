"""``diffkit.testing.write_clip_tokenizer_files``: an offline CLIP tokenizer that transformers loads."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from diffkit.testing import CLIP_TEST_WORDS, clip_vocabulary, write_clip_tokenizer_files


def test_vocabulary_layout() -> None:
    vocab, merges = clip_vocabulary(("cat", "a"))
    assert len(set(vocab.values())) == len(vocab) == max(vocab.values()) + 1
    assert vocab["!"] == 0 and vocab["!</w>"] == 256
    assert merges == ["c a", "ca t</w>"]
    assert vocab["cat</w>"] == 513
    assert list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"]


def test_files_written_without_transformers(tmp_path) -> None:
    folder = write_clip_tokenizer_files(tmp_path / "tokenizer", model_max_length=16)
    assert sorted(p.name for p in folder.iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json",
    ]
    assert (folder / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 16
    code = "import sys, diffkit.testing; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("class_name", ["CLIPTokenizer", "CLIPTokenizerFast"])
def test_transformers_loads_it(tmp_path, class_name: str) -> None:
    transformers = pytest.importorskip("transformers")
    folder = write_clip_tokenizer_files(tmp_path, model_max_length=12)
    tokenizer = getattr(transformers, class_name).from_pretrained(folder, local_files_only=True)
    assert tokenizer.model_max_length == 12
    ids = tokenizer("A PHOTO of seven  red cats!", padding="max_length", max_length=12, truncation=True).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == [
        "<|startoftext|>", "a</w>", "photo</w>", "of</w>", "seven</w>", "red</w>", "cats</w>", "!</w>",
        "<|endoftext|>", "<|endoftext|>", "<|endoftext|>", "<|endoftext|>",
    ]
    # a word outside the list falls back to byte symbols instead of failing
    assert tokenizer.convert_ids_to_tokens(tokenizer("zebra").input_ids)[1:-1] == ["z", "e", "b", "r", "a</w>"]
    assert len(tokenizer) == len(clip_vocabulary(CLIP_TEST_WORDS)[0])

    tokenizer.save_pretrained(tmp_path / "saved")
    again = getattr(transformers, class_name).from_pretrained(tmp_path / "saved", local_files_only=True)
    assert again("seven dogs").input_ids == tokenizer("seven dogs").input_ids
    assert again.model_max_length == 12

"""Test helpers for plugin authors: a pytest plugin and in-process plugin registration.

Enabled automatically when diffkit is installed (``pytest11`` entry point). Fixtures:

``diffkit_registry``
    the global registry with a fresh, empty state for one test (no installed plugins are
    loaded); register what the test needs with :func:`plugin`.

Context manager :func:`plugin` registers a hook module or object under a distribution name
and removes it afterwards, so a plugin is tested without being installed::

    with diffkit.testing.plugin(my_plugin.hooks, dist="diffkit-my-plugin"):
        assert registry.get("scheduler", "MyScheduler")
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from ._registry import PluginInfo, Registry, registry


@contextlib.contextmanager
def plugin(obj: Any, dist: str = "in-process-plugin", version: str | None = None) -> Iterator[PluginInfo]:
    """Register ``obj`` (a hook module, class or instance) for the duration of the block."""
    info = registry.register_plugin(obj, dist=dist, version=version)
    try:
        yield info
    finally:
        registry.unregister_plugin(dist)


@pytest.fixture
def diffkit_registry() -> Iterator[Registry]:
    """The global registry with a fresh state that loads no installed plugin."""
    with registry.isolated(autoload=False) as fresh:
        yield fresh


@pytest.fixture
def diffkit_installed_registry() -> Iterator[Registry]:
    """The global registry with a fresh state that loads the installed plugins again."""
    with registry.isolated(autoload=True) as fresh:
        yield fresh


#: Words that :func:`write_clip_tokenizer_files` gives one whole-word token each by default.
CLIP_TEST_WORDS: tuple[str, ...] = (
    "a", "an", "the", "photo", "picture", "painting", "of", "cat", "cats", "dog", "dogs", "horse",
    "astronaut", "riding", "on", "in", "with", "and", "red", "blue", "green", "yellow", "black",
    "white", "big", "small", "one", "two", "three", "seven", "blurry", "ugly", "low", "quality",
    "high", "detailed", "house", "tree", "moon", "sky", "landscape", "portrait", "mountain",
)


def _byte_level_symbols() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters, in CLIP's id order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols: dict[int, str] = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in symbols:
            symbols[b] = chr(256 + len(symbols) - len(printable))
    return symbols


def clip_vocabulary(words: tuple[str, ...] | list[str] = CLIP_TEST_WORDS) -> tuple[dict[str, int], list[str]]:
    """A byte-level BPE CLIP vocabulary and merge list where each of ``words`` is one token.

    Ids follow CLIP's order: the 256 byte symbols, their ``</w>`` forms, the merge results, then
    ``<|startoftext|>`` and ``<|endoftext|>``. Words are merged left to right, the last symbol
    carrying ``</w>``, so e.g. "cat" -> ``c a``, ``ca t</w>``.
    """
    byte_of = _byte_level_symbols()
    base = list(byte_of.values())
    vocab: dict[str, int] = {}
    for token in [*base, *(s + "</w>" for s in base)]:
        vocab[token] = len(vocab)
    merges: list[str] = []
    for word in words:
        symbols = [byte_of[b] for b in word.encode("utf-8")]
        symbols[-1] += "</w>"
        merged = symbols[0]
        for nxt in symbols[1:]:
            pair = f"{merged} {nxt}"
            merged += nxt
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault(merged, len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return vocab, merges


def write_clip_tokenizer_files(
    folder: Any,
    words: tuple[str, ...] | list[str] = CLIP_TEST_WORDS,
    model_max_length: int = 77,
    pad_token: str = "<|endoftext|>",
) -> Any:
    """Write a small offline CLIP tokenizer folder that ``CLIPTokenizer.from_pretrained`` loads.

    Tests cannot download ``openai/clip-vit-*`` tokenizers (no Hub on CI), so this writes
    ``vocab.json``, ``merges.txt``, ``tokenizer_config.json`` and ``special_tokens_map.json`` the way a
    CLIP tokenizer save lays them out. Needs no transformers; returns the folder as a ``Path``.
    """
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = clip_vocabulary(words)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
    }
    config = {
        **special,
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return folder

"""Tests of the template plugin, run without installing it.

``diffkit.testing`` (a pytest plugin that comes with diffkit) provides the ``diffkit_registry``
fixture, a fresh registry that loads no installed plugin, and ``diffkit.testing.plugin``, which
registers a hook module in-process for the duration of a block. Run from this folder with
``PYTHONPATH=src python -m pytest`` or, once installed, ``python -m pytest plugins/<name>``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import diffkit.testing
from diffkit import ConfigError, Processor
from diffkit_example import hooks
from diffkit_example.rescale import ExampleRescaleProcessor

DIST = "diffkit-example"


def test_hook_module_registers_a_resolvable_processor(diffkit_registry):
    with diffkit.testing.plugin(hooks, dist=DIST):
        assert diffkit_registry.names("processor") == ["ExampleRescaleProcessor"]
        entry = diffkit_registry.entry("processor", "ExampleRescaleProcessor")
        assert entry.dist == DIST
        assert entry.target == "diffkit_example.rescale:ExampleRescaleProcessor"  # a string, not the class
        cls = diffkit_registry.get("processor", "ExampleRescaleProcessor")
        assert cls is ExampleRescaleProcessor and issubclass(cls, Processor)
    assert diffkit_registry.names("processor") == []  # unregistered when the block ends


def test_hook_module_is_light():
    """Importing the hook module must not import torch, numpy or the module holding the class."""
    code = (
        "import sys, diffkit_example.hooks; "
        "print(sorted(m for m in ('torch', 'numpy', 'diffkit_example.rescale') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_config_round_trip_through_the_json_file(tmp_path):
    proc = ExampleRescaleProcessor(low=0.0, high=255.0)
    path = proc.save_config(tmp_path)
    saved = json.loads(path.read_text())
    assert path.name == "processor_config.json"
    assert saved["_class_name"] == "ExampleRescaleProcessor"
    assert (saved["low"], saved["high"]) == (0.0, 255.0)
    again = ExampleRescaleProcessor.from_config(ExampleRescaleProcessor.load_config(tmp_path))
    assert again.config.model_dump() == proc.config.model_dump() == {"low": 0.0, "high": 255.0}


def test_invalid_config_names_the_problem():
    with pytest.raises(ConfigError, match="high .* must be greater than low"):
        ExampleRescaleProcessor(low=1.0, high=1.0)
    with pytest.raises(ConfigError, match="'low'"):
        ExampleRescaleProcessor(low="not a number")


@settings(max_examples=50, deadline=None)
@given(
    low=st.floats(-10, 10),
    width=st.floats(0.5, 20),
    values=st.lists(st.floats(0, 1), min_size=1, max_size=16),
)
def test_postprocess_inverts_preprocess(low, width, values):
    proc = ExampleRescaleProcessor(low=low, high=low + width)
    x = np.asarray(values, dtype=np.float64)
    y = proc.preprocess(x)
    assert np.all(y >= low - 1e-9) and np.all(y <= low + width + 1e-9)
    np.testing.assert_allclose(proc.postprocess(y), x, atol=1e-9)


def test_postprocess_clamps_tensors():
    out = ExampleRescaleProcessor().postprocess(torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]))
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))


def test_parity_with_diffusers_normalize_and_denormalize():
    """The proof of correctness: the same numbers as diffusers (here: exactly), float32."""
    diffusers_image_processor = pytest.importorskip("diffusers.image_processor")
    reference = diffusers_image_processor.VaeImageProcessor
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 8, 8, generator=generator)
    latents = torch.randn(2, 3, 8, 8, generator=generator) * 1.5
    proc = ExampleRescaleProcessor()
    assert (proc.preprocess(images) - reference.normalize(images)).abs().max() <= 1e-5
    assert (proc.postprocess(latents) - reference.denormalize(latents)).abs().max() <= 1e-5
    torch.testing.assert_close(proc.postprocess(latents), reference.denormalize(latents), rtol=0, atol=0)

"""diffusers API names that code written for diffusers uses: ``dtype=`` beside ``torch_dtype=``."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from diffkit import DiffusionPipeline
from diffkit.testing import plugin

sys.path.insert(0, str(Path(__file__).parent))
from toy_components import ToyModel, ToyPipeline, ToyScheduler, hook_module  # noqa: E402


@pytest.fixture
def checkpoint(diffkit_registry, tmp_path):
    with plugin(hook_module(), dist="diffkit-toys"):
        torch.manual_seed(0)
        pipe = ToyPipeline(model=ToyModel(features=4), scheduler=ToyScheduler())
        yield pipe.save_pretrained(tmp_path / "toy")


# -- dtype, diffusers 0.42's name for torch_dtype --------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, "float16", "bf16"])
def test_model_takes_dtype_as_torch_dtype(checkpoint, tmp_path, dtype):
    model = ToyModel.from_pretrained(checkpoint / "model", dtype=dtype)
    expected = ToyModel.from_pretrained(checkpoint / "model", torch_dtype=dtype)
    assert model.proj.weight.dtype == expected.proj.weight.dtype != torch.float32
    assert "dtype" not in model.config.to_dict()  # not taken for a config override
    model.save_pretrained(tmp_path / "saved")  # which crashed when 'dtype' landed in the config


def test_pipeline_takes_dtype_as_torch_dtype(checkpoint, caplog):
    with caplog.at_level(logging.WARNING):
        pipe = DiffusionPipeline.from_pretrained(checkpoint, dtype=torch.float16)
        by_component = DiffusionPipeline.from_pretrained(checkpoint, dtype={"model": torch.bfloat16})
    assert pipe.model.dtype == torch.float16 and by_component.model.dtype == torch.bfloat16
    assert "dtype" not in caplog.text  # no 'ignored argument' warning


@pytest.mark.parametrize(
    ("torch_dtype", "dtype", "ok"),
    [
        (torch.float16, torch.float16, True),
        ("fp16", torch.float16, True),
        (torch.float16, torch.bfloat16, False),
        ({"model": torch.float16}, {"model": "float16"}, True),
        ({"model": torch.float16}, torch.float16, False),
    ],
)
def test_both_names_must_agree_on_pipelines(checkpoint, torch_dtype, dtype, ok):
    if ok:
        assert DiffusionPipeline.from_pretrained(checkpoint, torch_dtype=torch_dtype, dtype=dtype).model.dtype == (
            torch.float16
        )
    else:
        with pytest.raises(ValueError, match="torch_dtype=.* and dtype=.* disagree"):
            DiffusionPipeline.from_pretrained(checkpoint, torch_dtype=torch_dtype, dtype=dtype)


def test_both_names_must_agree_on_models(checkpoint):
    assert ToyModel.from_pretrained(checkpoint / "model", torch_dtype="half", dtype=torch.float16).dtype == torch.float16
    with pytest.raises(ValueError, match="disagree"):
        ToyModel.from_pretrained(checkpoint / "model", torch_dtype=torch.float16, dtype=torch.float32)

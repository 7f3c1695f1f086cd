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


# -- outputs are dict-like ---------------------------------------------------------------------


def test_outputs_behave_like_diffusers_dicts():
    from diffkit.outputs import ImagePipelineOutput, SchedulerOutput

    sample, original = torch.ones(1), torch.zeros(1)
    out = SchedulerOutput(prev_sample=sample, pred_original_sample=original)
    assert out[0] is sample and out[1] is original and out[-1] is original
    assert out["prev_sample"] is sample and out.prev_sample is sample
    assert list(out.keys()) == ["prev_sample", "pred_original_sample"]
    assert list(out.values()) == [sample, original] and list(out.items())[1] == ("pred_original_sample", original)
    assert out.to_tuple() == (sample, original) and "prev_sample" in out and len(out) == 2
    partial = SchedulerOutput(prev_sample=sample)  # None fields are not items, as in diffusers
    assert list(partial) == ["prev_sample"] and "pred_original_sample" not in partial
    assert dict(partial) == {"prev_sample": sample} and partial.get("pred_original_sample") is None
    with pytest.raises(KeyError):
        partial["pred_original_sample"]  # noqa: B018
    images = ImagePipelineOutput(images=[1, 2])
    assert images == ImagePipelineOutput(images=[1, 2]) and images[0] == [1, 2]
    (first,) = images.to_tuple()
    assert first == [1, 2]


def test_output_type_numpy_is_np():
    from diffkit.outputs import output_type_of

    assert output_type_of("numpy", ("pil", "np")) == "np" and output_type_of("pil", ("pil", "np")) == "pil"
    with pytest.raises(ValueError, match="output_type='numpy' is not one of pt"):
        output_type_of("numpy", ("pt",))
    with pytest.raises(ValueError, match="output_type='jpeg' is not one of pil, np"):
        output_type_of("jpeg", ("pil", "np"))


# -- num_timesteps and guidance_scale of the last call, per thread -------------------------------


class GuidedPipeline(ToyPipeline):
    """Runs ``num_inference_steps`` toy steps under a progress bar; takes a ``guidance_scale``."""

    def __call__(self, num_inference_steps: int = 4, guidance_scale: float = 7.5, wait=None):  # type: ignore[override]
        state = self.scheduler.plan(num_inference_steps)
        for _ in self.progress_bar(state.timesteps):
            pass
        if wait is not None:
            wait()
        return num_inference_steps


class SubclassPipeline(GuidedPipeline):
    def __call__(self, steps: int = 2):  # type: ignore[override]
        return super().__call__(num_inference_steps=steps, guidance_scale=2.0)


def test_num_timesteps_and_guidance_scale_describe_the_last_call(diffkit_registry):
    import threading

    pipe = GuidedPipeline(model=ToyModel(features=4), scheduler=ToyScheduler())
    pipe.set_progress_bar_config(disable=True)
    assert pipe.num_timesteps is None and pipe.guidance_scale is None  # before any call
    pipe()
    assert (pipe.num_timesteps, pipe.guidance_scale) == (4, 7.5)  # the defaults count
    pipe(num_inference_steps=3, guidance_scale=1.0)
    assert (pipe.num_timesteps, pipe.guidance_scale) == (3, 1.0)
    with pytest.raises(AttributeError):
        pipe.num_timesteps = 5  # read-only, as in diffusers

    nested = SubclassPipeline(model=ToyModel(features=4), scheduler=ToyScheduler())
    nested.set_progress_bar_config(disable=True)
    nested(steps=5)  # the base __call__ it calls is part of the same call
    assert (nested.num_timesteps, nested.guidance_scale) == (5, 2.0)

    # threads sharing the pipeline each read their own last call, even while the other one runs
    both_ran = threading.Barrier(2)
    seen: dict[int, tuple[int | None, float | None]] = {}

    def work(steps: int, scale: float) -> None:
        pipe(num_inference_steps=steps, guidance_scale=scale, wait=both_ran.wait)
        both_ran.wait()  # both calls are done: a shared value would now be the other's for one thread
        seen[steps] = (pipe.num_timesteps, pipe.guidance_scale)

    threads = [threading.Thread(target=work, args=args) for args in ((2, 3.0), (6, 9.0))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {2: (2, 3.0), 6: (6, 9.0)}
    assert (pipe.num_timesteps, pipe.guidance_scale) == (3, 1.0)  # this thread's last call is unchanged



# -- a missing file is an OSError, as in diffusers ------------------------------------------------


def test_missing_weights_are_an_oserror_that_keeps_our_message(checkpoint, tmp_path):
    from diffkit.errors import CheckpointError, MissingFileError

    (checkpoint / "model" / "diffusion_pytorch_model.safetensors").unlink()
    for load in (lambda: ToyModel.from_pretrained(checkpoint / "model"), lambda: DiffusionPipeline.from_pretrained(checkpoint)):
        with pytest.raises(OSError, match="no weight file diffusion_pytorch_model.safetensors in") as err:
            load()
        assert isinstance(err.value, MissingFileError) and isinstance(err.value, CheckpointError)
    with pytest.raises(OSError, match="has no config.json"):
        ToyModel.from_pretrained(tmp_path)

"""``diffkit generate`` in-process, on tiny pipelines registered by the test (no plugin package needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import types
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffkit import cli
from diffkit.audio import write_wav
from diffkit.hookspecs import hookimpl
from diffkit.outputs import AudioPipelineOutput, ImagePipelineOutput
from diffkit.pipeline import Pipeline
from diffkit.randomness import randn_tensor
from diffkit.testing import plugin

sys.path.insert(0, str(Path(__file__).parent))
from toy_components import ToyModel, ToyPipeline, ToyScheduler, ToySchedulerConfig, ToyState  # noqa: E402

#: what the last pipeline call received: (pipeline class, scheduler class, model dtype, kwargs)
CALLS: list[tuple[str, str, torch.dtype, dict[str, Any]]] = []


def _record(pipe: Pipeline, kwargs: dict[str, Any]) -> None:
    CALLS.append((type(pipe).__name__, type(pipe.scheduler).__name__, pipe.model.dtype, kwargs))


@torch.inference_mode()
def _denoise(pipe: Pipeline, batch_size: int, generator: Any, steps: int) -> torch.Tensor:
    """A few toy-scheduler steps on ``(batch, 1, 2, 2)`` noise; the model mixes the 4 pixels."""
    x = randn_tensor((batch_size, 1, 2, 2), generator=generator, dtype=pipe.model.dtype)
    state = pipe.scheduler.plan(steps)
    for t in pipe.progress_bar(state.timesteps):
        x = state.step(pipe.model(x.reshape(batch_size, 4)).reshape(x.shape), t, x)[0]
    return x.float()


class TinyImagePipeline(Pipeline):
    """Unconditional: ``(batch, 1, 2, 2)`` grey images."""

    def __init__(self, model: Any, scheduler: Any) -> None:
        super().__init__(model=model, scheduler=scheduler)

    def __call__(
        self, batch_size: int = 1, generator: Any = None, num_inference_steps: int = 3, output_type: str = "pil"
    ) -> ImagePipelineOutput:
        _record(self, {"batch_size": batch_size, "generator": generator, "num_inference_steps": num_inference_steps})
        x = _denoise(self, batch_size, generator, num_inference_steps)
        images = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
        return ImagePipelineOutput(images=self.numpy_to_pil(images) if output_type == "pil" else images)


class TinyTensorPipeline(TinyImagePipeline):
    """Returns NCHW tensors and a tuple: the writer must cope."""

    def __call__(self, batch_size: int = 1, generator: Any = None) -> tuple[torch.Tensor]:  # type: ignore[override]
        _record(self, {"batch_size": batch_size, "generator": generator})
        x = _denoise(self, batch_size, generator, 2).repeat(1, 3, 1, 1)
        return ((x / 2 + 0.5).clamp(0, 1),)


class TinyAudioPipeline(Pipeline):
    """Unconditional audio: ``(batch, 2, 100)`` at 8 kHz."""

    sample_rate = 8000

    def __init__(self, model: Any, scheduler: Any) -> None:
        super().__init__(model=model, scheduler=scheduler)

    def __call__(self, batch_size: int = 1, generator: Any = None, num_inference_steps: int = 2) -> AudioPipelineOutput:
        _record(self, {"batch_size": batch_size, "num_inference_steps": num_inference_steps})
        x = _denoise(self, batch_size, generator, num_inference_steps)
        audio = torch.tanh(x.reshape(batch_size, 1, 4)).repeat(1, 2, 25)
        return AudioPipelineOutput(audios=audio.numpy())


class TinyPromptPipeline(TinyImagePipeline):
    """Needs a prompt; takes an optional image; ``num_images_per_prompt`` instead of ``batch_size``."""

    def __call__(  # type: ignore[override]
        self, prompt: str, num_images_per_prompt: int = 1, image: Any = None, generator: Any = None
    ) -> ImagePipelineOutput:
        _record(self, {"prompt": prompt, "num_images_per_prompt": num_images_per_prompt, "image": image})
        return super().__call__(batch_size=num_images_per_prompt, generator=generator)


class TinyTextPipeline(TinyImagePipeline):
    """Text-to-image style inputs: negative prompt, guidance scale, height and width (a multiple of 2)."""

    def __call__(  # type: ignore[override]
        self,
        prompt: str,
        negative_prompt: str | None = None,
        guidance_scale: float = 7.5,
        height: int = 2,
        width: int = 2,
        generator: Any = None,
    ) -> ImagePipelineOutput:
        if height % 2 or width % 2:
            raise ValueError(f"height and width must be multiples of 2, got {height} and {width}")
        _record(
            self,
            {"prompt": prompt, "negative_prompt": negative_prompt, "guidance_scale": guidance_scale, "height": height, "width": width},
        )
        return super().__call__(generator=generator)


class OtherScheduler(ToyScheduler):
    """Accepts ToyScheduler configs: a legal ``--scheduler`` target."""

    config_class = ToySchedulerConfig
    compatibles_names = ("ToyScheduler",)

    def plan(self, num_inference_steps=None, device=None, **kwargs):
        n = num_inference_steps or self.config.num_train_timesteps
        return ToyState(self, torch.arange(n - 1, -1, -1, device=device), n)


class LoneScheduler(ToyScheduler):
    """Registered, but ToyScheduler configs are not among its compatibles."""

    config_class = ToySchedulerConfig


class PickyPipeline(TinyImagePipeline):
    """Converts every scheduler to a ToyScheduler on construction, as DDIMPipeline does with DDIM."""

    def __init__(self, model: Any, scheduler: Any) -> None:
        if type(scheduler) is not ToyScheduler:
            scheduler = ToyScheduler.from_config(scheduler.config)
        super().__init__(model=model, scheduler=scheduler)


PIPELINES = (
    TinyImagePipeline,
    TinyTensorPipeline,
    TinyAudioPipeline,
    TinyPromptPipeline,
    TinyTextPipeline,
    PickyPipeline,
    ToyPipeline,
)


def hooks() -> types.ModuleType:
    module = types.ModuleType("generate_test_hooks")

    @hookimpl
    def register_models(register):
        register("ToyModel", ToyModel)

    @hookimpl
    def register_schedulers(register):
        for cls in (ToyScheduler, OtherScheduler, LoneScheduler):
            register(cls.__name__, cls)

    @hookimpl
    def register_pipelines(register):
        for cls in PIPELINES:
            register(cls.__name__, cls)

    module.register_models = register_models
    module.register_schedulers = register_schedulers
    module.register_pipelines = register_pipelines
    return module


@pytest.fixture
def reg(diffkit_registry, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIFFKIT_DISABLE_PROGRESS", raising=False)  # errors stay one line despite progress bars
    CALLS.clear()
    with plugin(hooks(), dist="diffkit-generate-toys"):
        yield


@pytest.fixture
def ckpt(reg, tmp_path):
    """``ckpt(PipelineClass)``: a saved checkpoint folder of that pipeline."""

    def make(cls: type[Pipeline] = TinyImagePipeline, name: str | None = None) -> Path:
        torch.manual_seed(0)
        pipe = cls(model=ToyModel(features=4), scheduler=ToyScheduler(num_train_timesteps=10))
        return pipe.save_pretrained(tmp_path / "checkpoints" / (name or cls.__name__.lower()))

    return make


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("diffkit generate: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


# -- images ----------------------------------------------------------------------------------


def test_writes_a_png_grid_and_says_what_it_wrote(ckpt, capsys, tmp_path):
    source = ckpt()
    out_file = tmp_path / "grid.png"
    code, out, err = run(capsys, str(source), "--num-images", "5", "--steps", "4", "--seed", "7", "--output", str(out_file))
    assert code == 0, err
    assert "4/4" in err and "Loading pipeline components" not in err  # the sampling bar only
    assert "DIFFKIT_DISABLE_PROGRESS" not in os.environ  # quieting the loader leaves no trace
    lines = out.strip().splitlines()
    assert lines[0] == str(out_file.resolve())
    assert "5 images of 2x2 in a 3x2 grid" in lines[1] and "seed 7" in lines[1] and "4 steps" in lines[1]
    assert "TinyImagePipeline with ToyScheduler" in lines[1]
    with Image.open(out_file) as grid:
        assert grid.format == "PNG" and grid.mode == "L"
        assert grid.size == (3 * 2 + 2 * cli.GRID_GAP, 2 * 2 + cli.GRID_GAP)
        pixels = np.asarray(grid)
    # the options reached __call__ under the pipeline's own names; the generator is seeded
    name, scheduler, dtype, kwargs = CALLS[-1]
    assert (name, scheduler, dtype) == ("TinyImagePipeline", "ToyScheduler", torch.float32)
    assert kwargs["batch_size"] == 5 and kwargs["num_inference_steps"] == 4
    assert kwargs["generator"].initial_seed() == 7
    # the first image sits top left, a gap column follows it
    expected = TinyImagePipeline.from_pretrained(source)(
        batch_size=5, generator=torch.Generator().manual_seed(7), num_inference_steps=4
    ).images
    np.testing.assert_array_equal(pixels[:2, :2], np.asarray(expected[0]))
    np.testing.assert_array_equal(pixels[:2, 4:6], np.asarray(expected[1]))
    assert (pixels[:, 2:4] == cli.GRID_GAP_VALUE).all()


def test_same_seed_same_file_other_seed_other_file(ckpt, capsys, tmp_path):
    source = str(ckpt())
    files = []
    for seed in ("1", "1", "2"):
        path = tmp_path / f"s{len(files)}.png"
        assert run(capsys, source, "--num-images", "4", "--seed", seed, "--output", str(path))[0] == 0
        files.append(np.asarray(Image.open(path)))
    np.testing.assert_array_equal(files[0], files[1])
    assert not np.array_equal(files[0], files[2])


def test_defaults_name_the_file_after_the_source_and_pick_a_seed(ckpt, capsys, tmp_path):
    source = ckpt(name="my-model")
    code, out, err = run(capsys, str(source))
    assert code == 0, err
    written = tmp_path / "my-model.png"  # the test runs in tmp_path
    assert out.splitlines()[0] == str(written.resolve())
    with Image.open(written) as image:
        assert image.size == (2, 2)  # one image: no grid
    assert "1 image of 2x2" in out
    seed = int(out.split("seed ")[1].split(",")[0])
    assert CALLS[-1][3]["generator"].initial_seed() == seed
    assert CALLS[-1][3]["num_inference_steps"] == 3  # the pipeline's default: no --steps, nothing passed


def test_tensor_outputs_in_a_tuple_and_a_jpeg(ckpt, capsys, tmp_path):
    source = str(ckpt(TinyTensorPipeline))
    code, out, err = run(capsys, source, "--num-images", "2", "--output", str(tmp_path / "t.jpg"))
    assert code == 0, err
    with Image.open(tmp_path / "t.jpg") as image:
        assert image.format == "JPEG" and image.mode == "RGB" and image.size == (2 * 2 + cli.GRID_GAP, 2)


def test_undeclared_output_kind_keeps_the_work_under_the_right_suffix(ckpt, capsys, tmp_path):
    # TinyTensorPipeline's annotation names no output class: the mismatch shows only afterwards
    code, out, err = run(capsys, str(ckpt(TinyTensorPipeline)), "--output", str(tmp_path / "t.wav"))
    assert code == 0, err
    assert "note: TinyTensorPipeline made image, so it goes to" in err
    assert out.splitlines()[0] == str((tmp_path / "t.png").resolve())
    assert not (tmp_path / "t.wav").exists()


def test_dtype_and_device(ckpt, capsys, tmp_path):
    source = str(ckpt())
    code, _, err = run(capsys, source, "--dtype", "bfloat16", "--device", "cpu", "--output", str(tmp_path / "b.png"))
    assert code == 0, err
    assert CALLS[-1][2] == torch.bfloat16


# -- scheduler swap ------------------------------------------------------------------------


def test_scheduler_swap_keeps_the_config(ckpt, capsys, tmp_path):
    code, out, err = run(capsys, str(ckpt()), "--scheduler", "OtherScheduler", "--output", str(tmp_path / "o.png"))
    assert code == 0, err
    assert CALLS[-1][:2] == ("TinyImagePipeline", "OtherScheduler")
    assert "TinyImagePipeline with OtherScheduler" in out


def test_pipeline_option_loads_the_checkpoint_into_another_class(ckpt, capsys, tmp_path):
    source = str(ckpt(TinyImagePipeline))
    code, out, err = run(capsys, source, "--pipeline", "PickyPipeline", "--output", str(tmp_path / "p.png"))
    assert code == 0, err
    assert CALLS[-1][:2] == ("PickyPipeline", "ToyScheduler")
    assert "PickyPipeline with ToyScheduler, 3 steps" in out  # the pipeline's default step count
    code, out, err = run(capsys, source, "--pipeline", "TinyImagePipe")
    assert_one_line_error(code, err, "--pipeline", "Did you mean 'TinyImagePipeline'")


@pytest.mark.parametrize(
    ("pipeline", "scheduler", "fragments"),
    [
        (TinyImagePipeline, "NoSuchScheduler", ("--scheduler", "NoSuchScheduler", "LoneScheduler, OtherScheduler, ToyScheduler")),
        (TinyImagePipeline, "OtherSchedular", ("Did you mean", "OtherScheduler")),
        (TinyImagePipeline, "otherscheduler", ("Did you mean 'OtherScheduler'",)),  # case first, not 'ToyScheduler'
        (TinyImagePipeline, "TOYSCHEDULER", ("Did you mean 'ToyScheduler'",)),
        (TinyImagePipeline, "LoneScheduler", ("LoneScheduler cannot take the config of ToyScheduler", "OtherScheduler")),
        (PickyPipeline, "OtherScheduler", ("PickyPipeline samples only with ToyScheduler",)),
    ],
)
def test_scheduler_errors(ckpt, capsys, pipeline, scheduler, fragments):
    code, out, err = run(capsys, str(ckpt(pipeline)), "--scheduler", scheduler)
    assert_one_line_error(code, err, *fragments)
    assert not CALLS and not out  # nothing ran, nothing written
    assert not list(Path.cwd().glob("*.png"))


# -- what a pretrained package recommends ----------------------------------------------------


def _pretrained(path: Path, **recommended: Any) -> types.ModuleType:
    module = types.ModuleType("pretrained_toy_hooks")

    @hookimpl
    def register_pretrained(register):
        register("toys/recommended", path, **recommended)

    module.register_pretrained = register_pretrained
    return module


def test_pretrained_recommendations_are_the_defaults(ckpt, capsys, tmp_path):
    source = ckpt()
    hooks = _pretrained(source, scheduler="OtherScheduler", call_defaults={"num_inference_steps": 2, "eta": 0.5})
    with plugin(hooks, dist="diffkit-pretrained-toy"):
        code, out, err = run(capsys, "toys/recommended", "--output", str(tmp_path / "r.png"))
        assert code == 0, err
        # the scheduler and step count it recommends; 'eta' is left out: this pipeline takes none
        assert CALLS[-1][:2] == ("TinyImagePipeline", "OtherScheduler")
        assert CALLS[-1][3]["num_inference_steps"] == 2
        assert "TinyImagePipeline with OtherScheduler, 2 steps (recommended):" in err  # the progress bar
        assert "2/2" in err and "TinyImagePipeline with OtherScheduler, 2 steps (recommended), seed" in out

        assert run(capsys, "toys/recommended", "--steps", "4")[0] == 0  # an option wins over the recommendation
        assert CALLS[-1][1] == "OtherScheduler" and CALLS[-1][3]["num_inference_steps"] == 4

        code, out, err = run(capsys, "toys/recommended", "--scheduler", "ToyScheduler")
        assert code == 0, err  # another scheduler: the recommended steps do not go with it
        assert CALLS[-1][1] == "ToyScheduler" and CALLS[-1][3]["num_inference_steps"] == 3
        assert "TinyImagePipeline with ToyScheduler, 3 steps:" in err and "recommended" not in err


def test_without_recommendations_the_bar_still_says_what_runs(ckpt, capsys):
    code, out, err = run(capsys, str(ckpt()), "--steps", "2")
    assert code == 0, err
    assert "TinyImagePipeline with ToyScheduler, 2 steps: 100%" in err


@pytest.mark.parametrize(
    ("recommended", "fragment"),
    [
        ({"steps": 5}, "unknown keywords ['steps']"),
        ({"scheduler": 3}, "scheduler=3"),
        ({"call_defaults": [1]}, "call_defaults=[1]"),
    ],
)
def test_bad_recommendations_name_the_plugin(ckpt, capsys, recommended, fragment):
    with plugin(_pretrained(ckpt(), **recommended), dist="diffkit-pretrained-toy"):
        code, out, err = run(capsys, "toys/recommended")
    assert code == 1 and "plugin 'diffkit-pretrained-toy'" in err and fragment in err, err
    assert not CALLS


# -- pipelines with other inputs -----------------------------------------------------------


def test_prompt_and_image_slot_in(ckpt, capsys, tmp_path):
    picture = tmp_path / "in.png"
    Image.new("L", (3, 3), 9).save(picture)
    source = str(ckpt(TinyPromptPipeline))
    code, out, err = run(
        capsys, source, "--prompt", "a digit", "--image", str(picture), "--num-images", "2", "--output", str(tmp_path / "p.png")
    )
    assert code == 0, err
    kwargs = CALLS[0][3]  # the prompt pipeline's own call (it then calls its base class)
    assert kwargs["prompt"] == "a digit" and kwargs["num_images_per_prompt"] == 2
    assert kwargs["image"].mode == "RGB" and kwargs["image"].size == (3, 3)


def test_text_to_image_options_slot_in(ckpt, capsys, tmp_path):
    source = str(ckpt(TinyTextPipeline))
    argv = ["--prompt", "a 7", "--negative-prompt", "blurry", "--guidance-scale", "3.5", "--height", "4", "--width", "6"]
    code, out, err = run(capsys, source, *argv, "--output", str(tmp_path / "t.png"))
    assert code == 0, err
    kwargs = CALLS[0][3]
    assert kwargs == {"prompt": "a 7", "negative_prompt": "blurry", "guidance_scale": 3.5, "height": 4, "width": 6}
    code, out, err = run(capsys, source, "--prompt", "a 7", "--output", str(tmp_path / "d.png"))
    assert code == 0, err
    kwargs = CALLS[-2][3]  # the text pipeline's own call, before its base class records
    assert kwargs["guidance_scale"] == 7.5 and kwargs["negative_prompt"] is None  # not passed: the defaults


@pytest.mark.parametrize(
    ("pipeline", "argv", "fragments"),
    [
        (TinyImagePipeline, ["--guidance-scale", "2"], ("TinyImagePipeline does not take --guidance-scale",)),
        (TinyImagePipeline, ["--negative-prompt", "x"], ("does not take --negative-prompt", "negative_prompt")),
        (TinyImagePipeline, ["--height", "8"], ("does not take --height",)),
        (TinyTextPipeline, ["--prompt", "a", "--width", "3"], ("TinyTextPipeline refused the arguments", "multiples of 2")),
        (TinyTextPipeline, ["--prompt", "a", "--guidance-scale", "nan"], ("--guidance-scale", "finite")),
        (TinyTextPipeline, ["--prompt", "a", "--guidance-scale", "big"], ("--guidance-scale", "'big' is not a number")),
        (TinyTextPipeline, ["--prompt", "a", "--height", "0"], ("--height", "at least 1")),
        (TinyTextPipeline, ["--prompt", "a", "--negative-prompt", " "], ("--negative-prompt", "must not be empty")),
        (TinyPromptPipeline, [], ("TinyPromptPipeline needs prompt (--prompt)",)),
        (TinyImagePipeline, ["--prompt", "a cat"], ("TinyImagePipeline does not take --prompt",)),
        (TinyImagePipeline, ["--mask-image", "IMAGE"], ("does not take --mask-image", "mask_image")),
        (TinyTensorPipeline, ["--steps", "3"], ("TinyTensorPipeline does not take --steps", "num_inference_steps")),
        (ToyPipeline, [], ("ToyPipeline needs 'x'", "options for")),
        (TinyImagePipeline, ["--output", "x.wav"], ("TinyImagePipeline makes image", "x.png")),
        (TinyAudioPipeline, ["--output", "x.png"], ("TinyAudioPipeline makes audio", "x.wav")),
    ],
)
def test_inputs_that_do_not_fit_the_pipeline(ckpt, capsys, tmp_path, pipeline, argv, fragments):
    picture = tmp_path / "in.png"
    Image.new("L", (3, 3)).save(picture)
    argv = [str(picture) if a == "IMAGE" else a for a in argv]
    code, out, err = run(capsys, str(ckpt(pipeline)), *argv)
    assert_one_line_error(code, err, *fragments)
    assert not list(Path.cwd().glob("x.*"))


# -- audio ---------------------------------------------------------------------------------


def test_audio_becomes_wav_files(ckpt, capsys, tmp_path):
    source = str(ckpt(TinyAudioPipeline, name="tiny-audio"))
    code, out, err = run(capsys, source, "--seed", "3")
    assert code == 0, err
    with wave.open(str(tmp_path / "tiny-audio.wav")) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (2, 2, 8000, 100)
    assert "1 clip of 0.01 s, 2 channel(s) at 8000 Hz" in out

    code, out, err = run(capsys, source, "--num-images", "3", "--output", str(tmp_path / "many.wav"))
    assert code == 0, err
    written = out.strip().splitlines()[:3]
    assert written == [str((tmp_path / f"many-{i}.wav").resolve()) for i in range(3)]
    assert "3 clips" in out


def test_write_wav_round_trip(tmp_path):
    audio = np.array([[0.0, 0.5, -0.5, 1.0, -1.0, 2.0], [0.25, -0.25, 0.0, -3.0, 0.1, 0.0]])
    path = write_wav(tmp_path / "a.wav", torch.from_numpy(audio), 16000)
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 16000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").reshape(-1, 2).T
    np.testing.assert_array_equal(frames, np.round(np.clip(audio, -1, 1) * 32767).astype(np.int16))
    mono = write_wav(tmp_path / "m.wav", [0.0, 0.1, 0.2], 8000)
    with wave.open(str(mono)) as wav:
        assert wav.getnchannels() == 1 and wav.getnframes() == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "m.wav"]  # no partial files left


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros((2, 2, 2)), 8000, "shaped"),
        (np.zeros((1, 0)), 8000, "shaped"),
        (np.array([0.0, np.nan]), 8000, "NaN"),
        (np.zeros(4), 0, "sample_rate"),
        (np.zeros(4), 44.1, "sample_rate"),
    ],
)
def test_write_wav_rejects_bad_input(tmp_path, audio, rate, message):
    with pytest.raises(ValueError, match=message):
        write_wav(tmp_path / "bad.wav", audio, rate)
    assert not list(tmp_path.iterdir())


# -- bad arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--steps", "0"], ("--steps", "at least 1")),
        (["--steps", "ten"], ("--steps", "'ten' is not a whole number")),
        (["--num-images", "-2"], ("--num-images", "at least 1")),
        (["--seed", "-1"], ("--seed",)),
        (["--dtype", "float33"], ("--dtype='float33' is not a dtype",)),
        (["--device", "warp-drive"], ("--device 'warp-drive'",)),
        (["--device", "cuda:99"] if not torch.cuda.is_available() else ["--device", "cuda:999"], ("--device", "not usable here")),
        (["--output", "missing/x.png"], ("the folder missing does not exist",)),
        (["--output", "."], ("is a folder",)),
        (["--output", "x.notatype"], ("unknown file type '.notatype'",)),
        (["--image", "no-such.png"], ("--image", "no-such.png is not a file")),
        (["--prompt", " "], ("--prompt", "must not be empty")),
    ],
)
def test_bad_arguments_are_one_line(ckpt, capsys, argv, fragments):
    code, out, err = run(capsys, str(ckpt()), *argv)
    assert_one_line_error(code, err, *fragments)
    assert not CALLS


@pytest.mark.parametrize(
    ("source", "fragments"),
    [
        ("no/such-repo-here", ("cannot load 'no/such-repo-here'",)),
        ("./not-a-folder", ("cannot load './not-a-folder'", "registered pretrained name")),
        ("", ("is empty",)),
    ],
)
def test_unknown_sources_are_one_line(reg, capsys, monkeypatch, tmp_path, source, fragments):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out, err = run(capsys, source)
    assert_one_line_error(code, err, *fragments)


def test_unwritable_folder(ckpt, capsys, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # chmod does not stop root, so the permission check itself is what is exercised
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    code, _, err = run(capsys, str(ckpt()), "--output", str(locked / "x.png"))
    assert_one_line_error(code, err, f"cannot write to the folder {locked}")
    assert not CALLS


def test_a_checkpoint_needing_a_plugin_that_is_not_installed_is_bad_input(ckpt, capsys):
    source = ckpt()
    index = source / "model_index.json"
    index.write_text(index.read_text().replace('"TinyImagePipeline"', '"ImaginaryPipeline"'))
    code, out, err = run(capsys, str(source))
    assert_one_line_error(code, err, "cannot load", "No installed plugin provides pipeline 'ImaginaryPipeline'")


def test_a_single_model_folder_is_not_a_pipeline(reg, capsys, tmp_path):
    folder = ToyModel(features=4).save_pretrained(tmp_path / "model-only")
    code, _, err = run(capsys, str(folder))
    assert_one_line_error(code, err, "cannot load")


# -- cost of the other commands --------------------------------------------------------------


def test_generate_help_and_parser_build_do_not_import_torch():
    code = (
        "import sys, contextlib, io\n"
        "from diffkit import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        "    rc = cli.main(['generate', '--help'])\n"
        "print(rc, 'torch' in sys.modules, '--num-images' in out.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0", "False", "True"]

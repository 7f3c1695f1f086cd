"""``diffkit generate`` picks the Stable Diffusion task from the options given: ``--image`` runs img2img,
``--mask-image`` inpainting, ``--pipeline NAME`` wins; the written image is what the pipeline makes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent / "parity"))
from sd_checkpoints import build_diffusers_sd  # noqa: E402

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffkit import cli  # noqa: E402

BASE = ["--prompt", "a red cat", "--steps", "4", "--seed", "3", "--device", "cpu"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-sd")
    torch.manual_seed(0)
    build_diffusers_sd(root / "sd")
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "image.png")
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(root / "mask.png")
    Image.new("L", (16, 16)).save(root / "small-mask.png")
    return root


def _generate(capsys, *argv):
    code = cli.main(["generate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _expected(files, pipeline: str, **call):
    from diffkit import registry

    pipe = registry.get("pipeline", pipeline).from_pretrained(files / "sd")
    pipe.set_progress_bar_config(disable=True)
    images = pipe(prompt="a red cat", num_inference_steps=4, generator=torch.Generator("cpu").manual_seed(3), **call)
    return np.asarray(images.images[0])


@pytest.mark.parametrize(
    ("flags", "pipeline", "call"),
    [
        (["--strength", "0.5"], "StableDiffusionImg2ImgPipeline", {"strength": 0.5}),
        (["--mask-image", "mask.png"], "StableDiffusionInpaintPipeline", {"height": 32, "width": 32}),
    ],
    ids=["img2img", "inpaint"],
)
def test_image_options_pick_the_task(files, capsys, tmp_path, flags, pipeline, call):
    flags = [str(files / f) if f.endswith(".png") else f for f in flags]
    out_file = tmp_path / "out.png"
    argv = [str(files / "sd"), *BASE, "--image", str(files / "image.png"), *flags, "--output", str(out_file)]
    if "height" in call:
        argv += ["--height", "32", "--width", "32"]
    code, out, err = _generate(capsys, *argv)
    assert code == 0, err
    assert pipeline in out
    call = {**call, "image": Image.open(files / "image.png").convert("RGB")}
    if pipeline.endswith("InpaintPipeline"):
        call["mask_image"] = Image.open(files / "mask.png").convert("RGB")
    np.testing.assert_array_equal(np.asarray(Image.open(out_file).convert("RGB")), _expected(files, pipeline, **call))


def test_pipeline_option_wins(files, capsys, tmp_path):
    code, out, err = _generate(
        capsys, str(files / "sd"), *BASE, "--image", str(files / "image.png"), "--mask-image",
        str(files / "mask.png"), "--pipeline", "StableDiffusionInpaintPipeline", "--height", "32", "--width", "32",
        "--output", str(tmp_path / "o.png"),
    )
    assert code == 0, err
    assert "StableDiffusionInpaintPipeline" in out


def test_bad_image_task_inputs_are_one_line_errors(files, capsys, tmp_path):
    code, _, err = _generate(capsys, str(files / "sd"), *BASE, "--image", str(files / "image.png"), "--strength", "1.5")
    assert code == 2 and "must be a number from 0 to 1" in err
    code, _, err = _generate(
        capsys, str(files / "sd"), *BASE, "--image", str(files / "image.png"), "--mask-image",
        str(files / "small-mask.png"), "--output", str(tmp_path / "o.png"),
    )
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and "mask_image is 16x16 pixels but image is 32x32" in errors[0]
    code, _, err = _generate(capsys, str(files / "sd"), *BASE, "--strength", "0.5")
    assert code == 2 and "StableDiffusionPipeline does not take --strength" in err


@pytest.mark.parametrize(
    ("extra", "size"), [([], 32), (["--mask-image", "mask.png"], 16)], ids=["img2img", "inpaint"]
)
def test_greyscale_demo_takes_an_rgb_image_file(files, capsys, tmp_path, extra, size):
    # the tiny-sd-digits VAE has one channel: the CLI reads --image as greyscale for it, the mask always so;
    # img2img keeps the image's size, inpainting draws at the UNet's (16 px) as diffusers does
    out = tmp_path / "out.png"
    extra = [files / e if e.endswith(".png") else e for e in extra]
    code, stdout, err = _generate(
        capsys, "diffkit/tiny-sd-digits", "--prompt", "the digit seven", "--image", str(files / "image.png"),
        "--steps", "4", "--seed", "0", *map(str, extra), "--output", str(out),
    )
    assert code == 0, err
    assert str(out) in stdout
    with Image.open(out) as image:
        assert image.size == (size, size)

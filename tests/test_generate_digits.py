"""``diffkit generate diffkit/ddpm-digits`` works as a user runs it: installed, offline, no cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit import registry
from diffkit_pretrained_ddpm_digits import CHECKPOINT, NAME

ROOT = Path(__file__).resolve().parents[1]
DIFFKIT = Path(sys.executable).with_name("diffkit")
#: "a few MB at most"
MAX_WEIGHT_BYTES = 5_000_000


def offline_env(tmp_path: Path) -> dict[str, str]:
    """No network, an empty Hugging Face home, one CPU thread (the machine may be shared)."""
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        HF_HOME=str(tmp_path / "empty-hf-home"),
        HF_HUB_CACHE=str(tmp_path / "empty-hf-home" / "hub"),
        DIFFKIT_STRICT_PLUGINS="1",
        OMP_NUM_THREADS="1",
    )
    return env


def test_generate_the_demo_offline(tmp_path):
    out_file = tmp_path / "digits.png"
    proc = subprocess.run(
        [str(DIFFKIT), "generate", NAME, "--steps", "10", "--num-images", "4", "--seed", "0", "--output", str(out_file)],
        capture_output=True, text=True, env=offline_env(tmp_path), cwd=tmp_path, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == str(out_file.resolve())
    assert "4 images of 16x16 in a 2x2 grid" in lines[1] and "DDPMPipeline with DDIMScheduler, 10 steps (recommended)" in lines[1]
    assert "10/10" in proc.stderr  # the progress bar
    assert not (tmp_path / "empty-hf-home" / "hub").exists()  # nothing was fetched or cached
    with Image.open(out_file) as grid:
        assert grid.format == "PNG" and grid.mode == "L" and grid.size == (34, 34)
        pixels = np.asarray(grid)
    for row in (0, 18):
        for col in (0, 18):
            digit = pixels[row : row + 16, col : col + 16]
            # strokes on a dark background: some ink, mostly background
            assert 0.05 < (digit > 128).mean() < 0.6, digit


def test_the_checkpoint_is_registered_and_small():
    path = registry.get("pretrained", NAME)
    assert Path(path) == CHECKPOINT and (CHECKPOINT / "model_index.json").is_file()
    index = json.loads((CHECKPOINT / "model_index.json").read_text())
    assert index["_class_name"] == "DDPMPipeline"
    assert index["unet"] == ["diffusers", "UNet2DModel"] and index["scheduler"] == ["diffusers", "DDPMScheduler"]
    weights = sorted(CHECKPOINT.rglob("*.safetensors"))
    assert [w.relative_to(CHECKPOINT).as_posix() for w in weights] == ["unet/diffusion_pytorch_model.safetensors"]
    assert weights[0].stat().st_size < MAX_WEIGHT_BYTES
    record = json.loads((CHECKPOINT / "training.json").read_text())
    assert {"seed", "steps", "batch_size", "learning_rate"} <= set(record["settings"])
    assert record["wall_seconds"] > 0


def test_resolving_the_name_does_not_import_torch():
    code = (
        "import sys, json\n"
        "from diffkit import registry\n"
        f"p = registry.get('pretrained', {NAME!r})\n"
        "print(json.dumps([str(p), 'torch' in sys.modules]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [str(CHECKPOINT), False]


def test_the_wheel_carries_the_checkpoint(tmp_path):
    """hatchling packs the JSON and safetensors files that sit inside the package."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path), str(ROOT / "plugins" / "pretrained-ddpm-digits")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("diffkit_pretrained_ddpm_digits-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"diffkit_pretrained_ddpm_digits/ddpm-digits/{p.relative_to(CHECKPOINT).as_posix()}"
        for p in CHECKPOINT.rglob("*")
        if p.is_file()
    }
    assert expected and expected <= names
    assert "diffkit_pretrained_ddpm_digits/hooks.py" in names


#: the picture the README shows under its first command
README_PICTURE = ROOT / "docs" / "images" / "digits.png"


def readme_generate_arguments() -> list[str]:
    """The arguments of the README's ``diffkit generate`` of this demo (the unconditional one)."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if f" generate {NAME} " in line)
    command = line.split("&&")[-1].split()
    assert Path(command[0]).name == "diffkit" and command[1:3] == ["generate", NAME], command
    return command[1:]


def test_the_readme_picture_is_what_the_readme_command_draws(tmp_path, capsys):
    from diffkit import cli

    readme = (ROOT / "README.md").read_text()
    assert f"({README_PICTURE.relative_to(ROOT).as_posix()})" in readme or (
        f'src="{README_PICTURE.relative_to(ROOT).as_posix()}"' in readme
    )
    arguments = readme_generate_arguments()
    output = tmp_path / "digits.png"
    arguments[arguments.index("--output") + 1] = str(output)
    assert cli.main(arguments) == 0, capsys.readouterr().err
    with Image.open(output) as drawn, Image.open(README_PICTURE) as shown:
        assert drawn.size == shown.size and drawn.mode == shown.mode
        difference = np.abs(np.asarray(drawn, dtype=np.int16) - np.asarray(shown, dtype=np.int16))
    assert difference.max() <= 2, "docs/images/digits.png is stale: rerun the README's first command to redraw it"

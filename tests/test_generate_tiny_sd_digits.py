"""``diffkit generate diffkit/tiny-sd-digits --prompt …`` works as a user runs it (the README's first command),
and the picture the README shows is what that command draws."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from diffkit import registry
from diffkit_pretrained_tiny_sd_digits import CHECKPOINT, NAME

ROOT = Path(__file__).resolve().parents[1]
#: the picture the README shows under its first command
README_PICTURE = ROOT / "docs" / "images" / "tiny-sd-digits.png"
#: "a few MB" for the whole checkpoint
MAX_CHECKPOINT_BYTES = 5_000_000


def readme_generate_arguments() -> list[str]:
    """The arguments of the ``diffkit generate`` that ends the README's first command."""
    line = next(line for line in (ROOT / "README.md").read_text().splitlines() if " generate " in line)
    command = shlex.split(line.split("&&")[-1])
    assert Path(command[0]).name == "diffkit" and command[1:3] == ["generate", NAME], command
    return command[1:]


def test_the_readme_picture_is_what_the_readme_command_draws(tmp_path, capsys):
    from diffkit import cli

    readme = (ROOT / "README.md").read_text()
    assert f'src="{README_PICTURE.relative_to(ROOT).as_posix()}"' in readme
    arguments = readme_generate_arguments()
    assert "--prompt" in arguments and "--scheduler" not in arguments and "--steps" not in arguments
    output = tmp_path / "digits.png"
    arguments[arguments.index("--output") + 1] = str(output)
    assert cli.main(arguments) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "StableDiffusionPipeline with DDIMScheduler, 25 steps (recommended)" in out
    with Image.open(output) as drawn, Image.open(README_PICTURE) as shown:
        assert drawn.size == shown.size and drawn.mode == shown.mode == "L"
        difference = np.abs(np.asarray(drawn, dtype=np.int16) - np.asarray(shown, dtype=np.int16))
    assert difference.max() <= 2, (
        "docs/images/tiny-sd-digits.png is stale: rerun the README's first command to redraw it"
    )


def test_the_checkpoint_is_a_small_float16_stable_diffusion_folder():
    index = json.loads((CHECKPOINT / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"] and index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"] and index["safety_checker"] == [None, None]
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (CHECKPOINT / "tokenizer").iterdir()}
    from safetensors import safe_open

    weights = sorted(CHECKPOINT.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"text_encoder", "unet", "vae"}
    for path in weights:
        with safe_open(path, "np") as f:
            assert {str(f.get_slice(k).get_dtype()) for k in f.keys()} == {"F16"}, path
    assert sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file()) < MAX_CHECKPOINT_BYTES
    record = json.loads((CHECKPOINT / "training.json").read_text())
    assert {"seed", "steps", "vae_steps", "batch_size", "learning_rate"} <= set(record["settings"])
    assert record["cpu_seconds"] > 0 and record["versions"]["torch"]


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
    assert registry.get("pretrained", NAME) == CHECKPOINT


def test_the_wheel_carries_the_checkpoint(tmp_path):
    """hatchling packs the JSON, tokenizer and safetensors files that sit inside the package."""
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path), str(ROOT / "plugins" / "pretrained-tiny-sd-digits")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("diffkit_pretrained_tiny_sd_digits-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"diffkit_pretrained_tiny_sd_digits/tiny-sd-digits/{p.relative_to(CHECKPOINT).as_posix()}"
        for p in CHECKPOINT.rglob("*")
        if p.is_file()
    }
    assert expected and expected <= names
    assert "diffkit_pretrained_tiny_sd_digits/hooks.py" in names

"""Benchmark: importing the Stable Diffusion stack, diffkit's plugins vs diffusers' StableDiffusionPipeline.

Each command runs in a fresh interpreter, the commands interleaved in every repeat, each charged
its own CPU time (``--clock wall`` for wall time); bare interpreter start-up is shown for scale.

- ``SD stack``: the classes of the SD plugins, ``StableDiffusionPipeline``, ``UNet2DConditionModel``
  and ``AutoencoderKL`` (the packages export them lazily, so the attribute access imports them),
  against ``from diffusers import StableDiffusionPipeline``.
- ``ready to load``: everything ``from_pretrained`` of an SD checkpoint resolves, on both sides:
  for diffkit, registry look-ups of the pipeline, both models, the ``transformers`` component
  loader and the PNDM scheduler, plus ``CLIPTextModel``/``CLIPTokenizer`` from transformers;
  for diffusers, ``StableDiffusionPipeline, UNet2DConditionModel, AutoencoderKL, PNDMScheduler``
  (its pipeline module imports the CLIP classes itself). This is the reported ratio: both sides
  then hold torch, transformers and every class the load needs.

Run: python tests/benchmarks/bench_sd_import.py [--repeats 5] [--clock cpu|wall] [--tiny]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleave, parser, print_ratio, print_setup, ratio, run_python, write_json  # noqa: E402

KIT_STACK = (
    "from diffkit_pipeline_stable_diffusion import StableDiffusionPipeline\n"
    "from diffkit_models_unet import UNet2DConditionModel\n"
    "from diffkit_models_autoencoder import AutoencoderKL\n"
)
KIT_READY = (
    "from diffkit import DiffusionPipeline, registry\n"
    "for kind, name in [('pipeline', 'StableDiffusionPipeline'), ('model', 'UNet2DConditionModel'),\n"
    "                   ('model', 'AutoencoderKL'), ('component_loader', 'transformers'),\n"
    "                   ('scheduler', 'PNDMScheduler')]:\n"
    "    registry.get(kind, name)\n"
    "from transformers import CLIPTextModel, CLIPTokenizer\n"
)
COMMANDS: dict[str, list[str]] = {
    "python (bare start-up)": ["-c", "pass"],
    "diffkit SD stack": ["-c", KIT_STACK],
    "diffusers StableDiffusionPipeline": ["-c", "from diffusers import StableDiffusionPipeline"],
    "diffkit ready to load": ["-c", KIT_READY],
    "diffusers ready to load": [
        "-c", "from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel"],
}
STACK = ("diffkit SD stack", "diffusers StableDiffusionPipeline")
READY = ("diffkit ready to load", "diffusers ready to load")


def main() -> None:
    args = parser(__doc__, repeats=5).parse_args()
    if args.tiny:
        args.repeats = 1
    series = interleave(
        {name: (lambda cmd=cmd: run_python(cmd, clock=args.clock)) for name, cmd in COMMANDS.items()},
        args.repeats,
        args.warmup,
    )
    figures = {name: s["seconds"] for name, s in series.items()}
    print_setup("Stable Diffusion imports, one fresh interpreter per command and repeat: seconds", args)
    for name, f in figures.items():
        print(f"{name:36s} {f.text()}")
    stack, ready = ratio(*(figures[n] for n in STACK)), ratio(*(figures[n] for n in READY))
    write_json(args, figures | {"stack ratio": stack, "ready ratio": ready})
    print_ratio(ready, "SD imports, ready to load", f"SD plugin stack vs from diffusers import StableDiffusionPipeline "
                f"{stack:.2f}x")


if __name__ == "__main__":
    main()

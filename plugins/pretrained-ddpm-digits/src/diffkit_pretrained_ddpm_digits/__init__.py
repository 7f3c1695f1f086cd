"""diffkit pretrained checkpoint ``diffkit/ddpm-digits``, shipped inside this package.

:data:`CHECKPOINT` is the folder in the diffusers layout (``model_index.json``, ``unet/``,
``scheduler/``, plus ``training.json`` recording how it was trained). Importing this module
imports nothing heavy: the hook module registers ``"diffkit_pretrained_ddpm_digits:CHECKPOINT"``.
"""

from __future__ import annotations

from pathlib import Path

#: the name under which the checkpoint is registered (``DiffusionPipeline.from_pretrained(NAME)``)
NAME = "diffkit/ddpm-digits"
#: the checkpoint folder inside the installed package
CHECKPOINT: Path = Path(__file__).resolve().parent / "ddpm-digits"

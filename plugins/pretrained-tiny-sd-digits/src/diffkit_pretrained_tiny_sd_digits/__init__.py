"""diffkit pretrained checkpoint ``diffkit/tiny-sd-digits``, shipped inside this package.

:data:`CHECKPOINT` is the folder in the Stable Diffusion layout of diffusers (``model_index.json``,
``tokenizer/``, ``text_encoder/``, ``unet/``, ``vae/``, ``scheduler/``, plus ``training.json``
recording how it was trained). Importing this module imports nothing heavy: the hook module
registers ``"diffkit_pretrained_tiny_sd_digits:CHECKPOINT"``.
"""

from __future__ import annotations

from pathlib import Path

#: the name under which the checkpoint is registered (``DiffusionPipeline.from_pretrained(NAME)``)
NAME = "diffkit/tiny-sd-digits"
#: the checkpoint folder inside the installed package
CHECKPOINT: Path = Path(__file__).resolve().parent / "tiny-sd-digits"
#: the digits as the captions spell them
DIGIT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: what the demo is recommended to be sampled with (the quality test checks exactly this)
RECOMMENDED_SCHEDULER = "DDIMScheduler"
RECOMMENDED_CALL = {"num_inference_steps": 25, "guidance_scale": 5.0}


def digit_prompt(digit: int) -> str:
    """The prompt the quality test uses for one digit: ``"the digit seven"``."""
    return f"the digit {DIGIT_WORDS[digit]}"

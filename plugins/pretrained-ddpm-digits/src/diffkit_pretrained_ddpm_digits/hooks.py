"""Hook module of ``diffkit-pretrained-ddpm-digits``: registers the shipped checkpoint by name.

It imports only ``diffkit.hookspecs``; the target string resolves to a ``Path`` in the package
``__init__``, which imports nothing heavy either.
"""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_pretrained(register: Register) -> None:
    """``diffkit/ddpm-digits``: the embedded demo DDPM (16×16 grey digits).

    Sampled with DDIM in 50 steps (what its quality test checks) rather than the 1000 DDPM steps
    its scheduler config would run.
    """
    register(
        "diffkit/ddpm-digits",
        "diffkit_pretrained_ddpm_digits:CHECKPOINT",
        scheduler="DDIMScheduler",
        call_defaults={"num_inference_steps": 50},
    )

"""Hook module of ``diffkit-pretrained-tiny-sd-digits``: registers the shipped checkpoint by name.

It imports only ``diffkit.hookspecs`` and the package ``__init__`` (nothing heavy); the target
string resolves to the checkpoint ``Path`` there.
"""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl

from . import NAME, RECOMMENDED_CALL, RECOMMENDED_SCHEDULER


@hookimpl
def register_pretrained(register: Register) -> None:
    """``diffkit/tiny-sd-digits``: the embedded text-to-image demo (16×16 grey digits from a prompt).

    Sampled with DDIM in 25 steps at guidance 5 (what its quality test checks); the pipeline's own
    defaults (50 steps, guidance 7.5) work too but take twice as long for no better digits.
    """
    register(
        NAME,
        "diffkit_pretrained_tiny_sd_digits:CHECKPOINT",
        scheduler=RECOMMENDED_SCHEDULER,
        call_defaults=dict(RECOMMENDED_CALL),
    )

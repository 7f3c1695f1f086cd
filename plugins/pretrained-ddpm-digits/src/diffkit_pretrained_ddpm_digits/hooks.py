"""Hook module of ``diffkit-pretrained-ddpm-digits``: registers the shipped checkpoint by name.

It imports only ``diffkit.hookspecs``; the target string resolves to a ``Path`` in the package
``__init__``, which imports nothing heavy either.
"""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_pretrained(register: Register) -> None:
    """``diffkit/ddpm-digits``: the embedded demo DDPM (16×16 grey digits)."""
    register("diffkit/ddpm-digits", "diffkit_pretrained_ddpm_digits:CHECKPOINT")

"""Hook module: registers the safety checker by string (imports no torch)."""

from __future__ import annotations

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_models(register: Register) -> None:
    register("StableDiffusionSafetyChecker", "diffkit_models_safety_checker.safety_checker:StableDiffusionSafetyChecker")

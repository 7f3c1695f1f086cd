"""diffkit plugin: ``StableDiffusionSafetyChecker`` (CLIP-vision NSFW filter); names load lazily."""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    extra={
        "SafetyCheckerConfig": ".safety_checker",
        "CLIPVisionTower": ".clip_vision",
    },
)

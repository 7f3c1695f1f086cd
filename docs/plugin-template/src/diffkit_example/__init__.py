"""diffkit plugin template: ``ExampleRescaleProcessor``.

diffkit imports ``diffkit_example.hooks`` (and so this package) whenever it builds its
registry, so this file imports nothing heavy: :func:`diffkit.lazy.lazy_exports` makes every
class the hook module registers importable from the package (``from diffkit_example import
ExampleRescaleProcessor``), loading its module on first use.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__)

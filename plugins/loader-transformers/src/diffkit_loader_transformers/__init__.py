"""diffkit plugin: loads and saves ``model_index.json`` components of library ``transformers``.

Public names are imported lazily, so importing this package (which the registry does through
``hooks``) never imports torch or transformers.
"""

from diffkit.lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(
    __name__,
    extra={
        "weight_files_needed": ".files",
        "final_layer_norm": ".clip",
        "clip_text_hidden_states": ".clip",
    },
)

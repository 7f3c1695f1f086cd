"""diffkit plugin: attention backend 'sliced'."""
from diffkit.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register("sliced", "diffkit_attention_sliced.sliced:SlicedBackend")

"""diffkit plugin: attention backend 'xformers' (needs the optional xformers package and CUDA)."""
from diffkit.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register("xformers", "diffkit_attention_xformers.xformers_backend:XFormersBackend")

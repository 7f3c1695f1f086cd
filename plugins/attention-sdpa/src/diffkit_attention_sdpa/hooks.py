from diffkit.hookspecs import hookimpl


@hookimpl
def register_attention_backends(register):
    register("sdpa", "diffkit_attention_sdpa.sdpa:SDPABackend")

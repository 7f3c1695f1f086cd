"""diffkit plugin: offload strategy 'model'."""
from diffkit.hookspecs import hookimpl


@hookimpl
def register_offload_strategies(register):
    register("model", "diffkit_offload_model.model_offload:ModelOffload")

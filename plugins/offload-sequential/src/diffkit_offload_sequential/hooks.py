"""diffkit plugin: offload strategy 'sequential'."""
from diffkit.hookspecs import hookimpl


@hookimpl
def register_offload_strategies(register):
    register("sequential", "diffkit_offload_sequential.sequential_offload:SequentialOffload")

"""Entry point of the ``diffkit`` group: registers names only, imports nothing heavy."""

from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("DDIMTwistPipeline", "diffkit_community_ddim_twist.pipeline:DDIMTwistPipeline")

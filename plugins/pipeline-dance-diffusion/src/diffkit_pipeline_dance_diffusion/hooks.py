"""diffkit plugin hooks: register ``DanceDiffusionPipeline`` without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_pipelines(register: Register) -> None:
    register("DanceDiffusionPipeline", "diffkit_pipeline_dance_diffusion.pipeline:DanceDiffusionPipeline")

"""diffkit plugin hooks: register ``LDMPipeline`` without importing torch."""

from diffkit.hookspecs import Register, hookimpl


@hookimpl
def register_pipelines(register: Register) -> None:
    register("LDMPipeline", "diffkit_pipeline_latent_diffusion.unconditional:LDMPipeline")

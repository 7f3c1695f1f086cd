from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("DDPMPipeline", "diffkit_pipeline_ddpm.pipeline:DDPMPipeline")

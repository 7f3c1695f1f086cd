from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("DDIMPipeline", "diffkit_pipeline_ddim.pipeline:DDIMPipeline")

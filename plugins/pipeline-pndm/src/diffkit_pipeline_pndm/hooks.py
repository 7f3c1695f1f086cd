from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("PNDMPipeline", "diffkit_pipeline_pndm.pipeline:PNDMPipeline")

from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("KarrasVePipeline", "diffkit_pipeline_karras_ve.pipeline:KarrasVePipeline")

from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("RePaintPipeline", "diffkit_pipeline_repaint.pipeline:RePaintPipeline")

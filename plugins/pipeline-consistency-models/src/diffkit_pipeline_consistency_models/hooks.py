from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("ConsistencyModelPipeline", "diffkit_pipeline_consistency_models.pipeline:ConsistencyModelPipeline")

from diffkit.hookspecs import hookimpl


@hookimpl
def register_pipelines(register):
    register("ScoreSdeVePipeline", "diffkit_pipeline_score_sde_ve.pipeline:ScoreSdeVePipeline")

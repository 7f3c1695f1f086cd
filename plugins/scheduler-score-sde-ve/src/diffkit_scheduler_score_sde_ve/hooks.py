from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("ScoreSdeVeScheduler", "diffkit_scheduler_score_sde_ve.score_sde_ve:ScoreSdeVeScheduler")

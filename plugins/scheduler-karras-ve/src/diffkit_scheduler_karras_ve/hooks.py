from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("KarrasVeScheduler", "diffkit_scheduler_karras_ve.karras_ve:KarrasVeScheduler")

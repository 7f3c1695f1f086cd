from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("DEISMultistepScheduler", "diffkit_scheduler_deis.deis:DEISMultistepScheduler")

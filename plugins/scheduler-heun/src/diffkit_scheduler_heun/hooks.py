from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("HeunDiscreteScheduler", "diffkit_scheduler_heun.heun:HeunDiscreteScheduler")

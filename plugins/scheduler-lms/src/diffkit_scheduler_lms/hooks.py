from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("LMSDiscreteScheduler", "diffkit_scheduler_lms.lms:LMSDiscreteScheduler")

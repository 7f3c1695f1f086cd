from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("LCMScheduler", "diffkit_scheduler_lcm.lcm:LCMScheduler")
    register("TCDScheduler", "diffkit_scheduler_lcm.tcd:TCDScheduler")

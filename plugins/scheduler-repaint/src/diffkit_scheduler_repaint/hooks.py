from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("RePaintScheduler", "diffkit_scheduler_repaint.repaint:RePaintScheduler")

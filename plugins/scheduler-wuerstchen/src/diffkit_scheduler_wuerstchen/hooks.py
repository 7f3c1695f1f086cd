from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("DDPMWuerstchenScheduler", "diffkit_scheduler_wuerstchen.wuerstchen:DDPMWuerstchenScheduler")

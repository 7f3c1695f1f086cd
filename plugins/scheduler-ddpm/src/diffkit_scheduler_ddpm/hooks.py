from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("DDPMScheduler", "diffkit_scheduler_ddpm.ddpm:DDPMScheduler")

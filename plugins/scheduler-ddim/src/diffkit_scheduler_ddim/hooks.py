from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("DDIMScheduler", "diffkit_scheduler_ddim.ddim:DDIMScheduler")
    register("DDIMInverseScheduler", "diffkit_scheduler_ddim.ddim_inverse:DDIMInverseScheduler")

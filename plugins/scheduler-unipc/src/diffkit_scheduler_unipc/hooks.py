from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("UniPCMultistepScheduler", "diffkit_scheduler_unipc.unipc:UniPCMultistepScheduler")

from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("UnCLIPScheduler", "diffkit_scheduler_unclip.unclip:UnCLIPScheduler")

from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("PNDMScheduler", "diffkit_scheduler_pndm.pndm:PNDMScheduler")
    register("IPNDMScheduler", "diffkit_scheduler_pndm.ipndm:IPNDMScheduler")

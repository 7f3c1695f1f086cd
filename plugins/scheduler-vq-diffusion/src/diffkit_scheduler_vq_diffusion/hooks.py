from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("VQDiffusionScheduler", "diffkit_scheduler_vq_diffusion.vq_diffusion:VQDiffusionScheduler")

from diffkit.hookspecs import hookimpl

_MODULES = {
    "DPMSolverMultistepScheduler": "multistep",
    "DPMSolverMultistepInverseScheduler": "multistep_inverse",
    "DPMSolverSinglestepScheduler": "singlestep",
    "DPMSolverSDEScheduler": "sde",
    "EDMDPMSolverMultistepScheduler": "edm",
}


@hookimpl
def register_schedulers(register):
    for name, module in _MODULES.items():
        register(name, f"diffkit_scheduler_dpmsolver.{module}:{name}")

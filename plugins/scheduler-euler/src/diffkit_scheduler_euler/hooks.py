from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("EulerDiscreteScheduler", "diffkit_scheduler_euler.euler:EulerDiscreteScheduler")
    register(
        "EulerAncestralDiscreteScheduler", "diffkit_scheduler_euler.euler_ancestral:EulerAncestralDiscreteScheduler"
    )
    register("EDMEulerScheduler", "diffkit_scheduler_euler.edm_euler:EDMEulerScheduler")

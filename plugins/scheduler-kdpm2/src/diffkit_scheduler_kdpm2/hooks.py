from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("KDPM2DiscreteScheduler", "diffkit_scheduler_kdpm2.kdpm2:KDPM2DiscreteScheduler")
    register(
        "KDPM2AncestralDiscreteScheduler", "diffkit_scheduler_kdpm2.kdpm2_ancestral:KDPM2AncestralDiscreteScheduler"
    )

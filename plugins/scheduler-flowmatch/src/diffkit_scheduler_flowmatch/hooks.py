from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register("FlowMatchEulerDiscreteScheduler", "diffkit_scheduler_flowmatch.flow_match_euler:FlowMatchEulerDiscreteScheduler")
    register("FlowMatchHeunDiscreteScheduler", "diffkit_scheduler_flowmatch.flow_match_heun:FlowMatchHeunDiscreteScheduler")

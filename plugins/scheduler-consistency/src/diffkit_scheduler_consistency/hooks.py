from diffkit.hookspecs import hookimpl


@hookimpl
def register_schedulers(register):
    register(
        "CMStochasticIterativeScheduler",
        "diffkit_scheduler_consistency.cm_stochastic_iterative:CMStochasticIterativeScheduler",
    )

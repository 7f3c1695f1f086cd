"""diffkit plugin: the "sequential" offload strategy (weights stream per module)."""
